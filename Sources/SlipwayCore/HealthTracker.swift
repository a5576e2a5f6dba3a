/// Decides when an instance is healthy from the outcomes of its health probes: `healthyAfter`
/// consecutive successes make it healthy (it may get traffic), `unhealthyAfter` consecutive failures make
/// it unhealthy again (it loses traffic), and an instance never healthy by the deadline has failed to start.
/// Pure: probe results and time come in, transitions come out.
public struct HealthTracker: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable { case starting, healthy, unhealthy, failedToStart }

    public enum Transition: Sendable, Equatable {
        case becameHealthy
        case becameUnhealthy(reason: String)
        case missedDeadline(reason: String)
    }

    public let healthyAfter: Int
    public let unhealthyAfter: Int
    public let deadline: Double
    public private(set) var state: State = .starting
    public private(set) var consecutiveSuccesses = 0
    public private(set) var consecutiveFailures = 0
    public private(set) var lastFailure: String?
    let startedAt: Double

    public init(check: HealthCheck, startedAt: Double) {
        let (seconds, attoseconds) = check.deadline.components
        self.healthyAfter = max(1, check.healthyAfter)
        self.unhealthyAfter = max(1, check.unhealthyAfter)
        self.deadline = Double(seconds) + Double(attoseconds) / 1e18
        self.startedAt = startedAt
    }

    /// One probe result: `nil` failure means it answered 2xx/3xx in time.
    public mutating func record(failure: String?, now: Double) -> Transition? {
        if state == .failedToStart { return nil }
        if let failure {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            lastFailure = failure
            if state == .healthy, consecutiveFailures >= unhealthyAfter {
                state = .unhealthy
                return .becameUnhealthy(reason: "\(consecutiveFailures) failed checks in a row, last: \(failure)")
            }
            return deadlineCheck(now)
        }
        consecutiveSuccesses += 1
        consecutiveFailures = 0
        if state != .healthy, consecutiveSuccesses >= healthyAfter {
            state = .healthy
            return .becameHealthy
        }
        return deadlineCheck(now)
    }

    /// Time passing without a probe result still counts against the start deadline.
    public mutating func tick(now: Double) -> Transition? { deadlineCheck(now) }

    mutating func deadlineCheck(_ now: Double) -> Transition? {
        guard state == .starting, now - startedAt >= deadline else { return nil }
        state = .failedToStart
        return .missedDeadline(reason: "not healthy within \(Int(deadline))s" + (lastFailure.map { "; last check: \($0)" } ?? "; no check answered"))
    }

    public var receivesTraffic: Bool { state == .healthy }
}
