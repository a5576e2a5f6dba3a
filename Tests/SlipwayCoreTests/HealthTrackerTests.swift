import Testing
@testable import SlipwayCore

struct HealthTrackerTests {
    func check(healthyAfter: Int = 2, unhealthyAfter: Int = 3, deadline: Duration = .seconds(10)) -> HealthCheck {
        var check = HealthCheck()
        check.healthyAfter = healthyAfter
        check.unhealthyAfter = unhealthyAfter
        check.deadline = deadline
        return check
    }

    @Test func becomesHealthyAfterConsecutiveSuccessesOnly() {
        var tracker = HealthTracker(check: check(), startedAt: 0)
        #expect(tracker.record(failure: nil, now: 1) == nil)
        #expect(tracker.record(failure: "connection refused", now: 2) == nil)
        #expect(tracker.record(failure: nil, now: 3) == nil)
        #expect(!tracker.receivesTraffic)
        #expect(tracker.record(failure: nil, now: 4) == .becameHealthy)
        #expect(tracker.receivesTraffic)
    }

    @Test func losesTrafficAfterConsecutiveFailuresAndComesBack() {
        var tracker = HealthTracker(check: check(healthyAfter: 1, unhealthyAfter: 2), startedAt: 0)
        #expect(tracker.record(failure: nil, now: 1) == .becameHealthy)
        #expect(tracker.record(failure: "HTTP 500", now: 2) == nil)
        #expect(tracker.receivesTraffic)
        let down = tracker.record(failure: "timeout after 2s", now: 3)
        #expect(down == .becameUnhealthy(reason: "2 failed checks in a row, last: timeout after 2s"))
        #expect(!tracker.receivesTraffic)
        #expect(tracker.record(failure: nil, now: 4) == .becameHealthy)
    }

    @Test func missingTheDeadlineFailsTheStartWithTheLastReason() {
        var tracker = HealthTracker(check: check(deadline: .seconds(5)), startedAt: 100)
        #expect(tracker.record(failure: "connection refused", now: 101) == nil)
        #expect(tracker.tick(now: 104) == nil)
        #expect(tracker.tick(now: 105) == .missedDeadline(reason: "not healthy within 5s; last check: connection refused"))
        #expect(tracker.state == .failedToStart)
        #expect(tracker.record(failure: nil, now: 106) == nil, "a failed start stays failed")
    }

    @Test func aHealthyInstanceIsNotSubjectToTheStartDeadline() {
        var tracker = HealthTracker(check: check(healthyAfter: 1, deadline: .seconds(1)), startedAt: 0)
        #expect(tracker.record(failure: nil, now: 0.5) == .becameHealthy)
        #expect(tracker.tick(now: 100) == nil)
        #expect(tracker.receivesTraffic)
    }
}
