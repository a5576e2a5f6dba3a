import Testing
@testable import SlipwayEngine

/// Host assignment of an ssh target: one version per host, fewest changes.
@Suite struct SSHTargetOperatorTests {
    let hosts = ["a", "b", "c", "d"]

    @Test func firstReleaseTakesEveryHost() {
        let plan = SSHTargetOperator.assign(hosts: hosts, current: [:], counts: [("v1", 4)])
        #expect(plan == ["a": "v1", "b": "v1", "c": "v1", "d": "v1"])
    }

    @Test func canaryTakesOneHostFromStableAndKeepsTheRest() {
        let current = ["a": "v1", "b": "v1", "c": "v1", "d": "v1"]
        let plan = SSHTargetOperator.assign(hosts: hosts, current: current, counts: [("v2", 1), ("v1", 4)])
        #expect(plan.values.filter { $0 == "v2" }.count == 1)
        #expect(plan.values.filter { $0 == "v1" }.count == 3)
        // Growing the canary keeps the host it already has.
        let canaryHost = plan.first { $0.value == "v2" }!.key
        let next = SSHTargetOperator.assign(hosts: hosts, current: plan, counts: [("v2", 2), ("v1", 4)])
        #expect(next[canaryHost] == "v2")
        #expect(next.values.filter { $0 == "v2" }.count == 2)
    }

    @Test func rollbackGivesTheHostsBackAndStoppedVersionsLeave() {
        let current = ["a": "v2", "b": "v2", "c": "v1", "d": "v1"]
        let plan = SSHTargetOperator.assign(hosts: hosts, current: current, counts: [("v1", 4)])
        #expect(plan == ["a": "v1", "b": "v1", "c": "v1", "d": "v1"])
        let down = SSHTargetOperator.assign(hosts: hosts, current: current, counts: [("v1", 2)])
        #expect(down["c"] == "v1" && down["d"] == "v1" && down["a"] == nil && down["b"] == nil)
    }

    @Test func addressesOfHostEntries() {
        #expect(SSHTargetOperator.address(of: "deploy@app1.internal:2222") == "app1.internal")
        #expect(SSHTargetOperator.address(of: "127.0.0.2") == "127.0.0.2")
        #expect(SSHTargetOperator.address(of: "[::1]:22") == "::1")
        #expect(SSHTargetOperator.address(of: "::1") == "::1")
    }
}

extension SSHTargetOperatorTests {
    @Test func promotionTakesEveryHostIncludingTheStableVersionsLast() {
        let current = ["a": "v2", "b": "v1"]
        let plan = SSHTargetOperator.assign(hosts: ["a", "b"], current: current, counts: [("v2", 2), ("v1", 2)])
        #expect(plan == ["a": "v2", "b": "v2"])
    }
}
