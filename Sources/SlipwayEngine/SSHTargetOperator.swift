import Foundation
import SlipwayCore
import SlipwayDeploy

/// Realises a rollout's desired versions on an `ssh` target: each host runs one version at a time on
/// `app-port`, so "N instances of v" means "v active on N hosts". Hosts are reassigned with the fewest changes
/// (hosts already running a version keep it), the release is installed once per host and version, and the
/// agent is told the endpoints to health-check and route to (or HAProxy gets server weights).
struct SSHTargetOperator: Sendable {
    let target: SSHTarget
    let deployer: SSHDeployer

    init(target: SSHTarget) {
        self.target = target
        self.deployer = SSHDeployer(target: target, knownHosts: target.knownHosts)
    }

    /// The host part of a host entry (`user@host:port` → `host`), where the application listens.
    static func address(of entry: String) -> String {
        var host = entry
        if let at = host.lastIndex(of: "@") { host = String(host[host.index(after: at)...]) }
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") { return String(host[host.index(after: host.startIndex)..<close]) }
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon { host = String(host[..<colon]) }
        return host
    }

    /// Which host runs which version after the change: versions are served in order (the candidate first),
    /// each keeps the hosts it has up to its count, then takes free hosts, then hosts of versions with a surplus,
    /// then hosts of any version not yet served this round.
    static func assign(hosts: [String], current: [String: String], counts: [(version: String, count: Int)]) -> [String: String] {
        var result: [String: String] = [:]
        var free = Set(hosts)
        // Keep what already runs.
        for (version, count) in counts {
            let keeping = hosts.filter { current[$0] == version }.prefix(count)
            for host in keeping {
                result[host] = version
                free.remove(host)
            }
        }
        for (version, count) in counts {
            var have = result.values.filter { $0 == version }.count
            guard have < count else { continue }
            // Free hosts that run nothing wanted first, then hosts taken by versions later in the order.
            let order = hosts.filter { free.contains($0) && current[$0] == nil }
                + hosts.filter { free.contains($0) && current[$0] != nil }
                + hosts.filter { h in
                    // A version earlier in the order (the candidate) may take hosts from later ones, even their
                    // last: with one version per host, promoting means the stable version gives up every host.
                    guard let owner = result[h], owner != version else { return false }
                    let ownerIndex = counts.firstIndex { $0.version == owner } ?? Int.max
                    let selfIndex = counts.firstIndex { $0.version == version } ?? 0
                    return ownerIndex > selfIndex
                }
            for host in order where have < count {
                free.remove(host)
                result[host] = version
                have += 1
            }
        }
        return result
    }

    /// Installs and activates versions on hosts as assigned; returns the endpoints per version.
    func realise(_ desired: DesiredEnvironment, current: inout [String: String], candidate: String, releases: [String: (directory: String, digest: String)],
                 log: @Sendable (String) -> Void) async throws -> [String: [String]] {
        // What the hosts run now, asked once per rollout (a previous rollout, or a human, may have changed it);
        // after that the controller's own record is the truth, so no ssh round trip per step.
        if current.isEmpty {
            for host in target.hosts {
                if let version = try await deployer.current(on: host) { current[host] = version }
            }
        }
        var counts = desired.versions.map { (version: $0.key, count: $0.value.count) }
        counts.sort { a, b in a.version == candidate ? true : (b.version == candidate ? false : a.version < b.version) }
        let plan = Self.assign(hosts: target.hosts, current: current, counts: counts)
        for host in target.hosts {
            let wanted = plan[host]
            guard wanted != current[host] else { continue }
            if let version = wanted {
                guard let release = releases[version] else { throw RolloutError("no unpacked release for \(version)") }
                log("\(host): install and start \(version)")
                _ = try await deployer.install(version: version, digest: release.digest, from: release.directory, on: host)
                try await deployer.activate(version: version, on: host)
                current[host] = version
            } else if current[host] != nil {
                log("\(host): stop \(current[host]!)")
                try await deployer.deactivate(on: host)
                current[host] = nil
            }
        }
        var endpoints: [String: [String]] = [:]
        for (host, version) in current {
            endpoints[version, default: []].append("\(Self.address(of: host)):\(target.appPort)")
        }
        for key in endpoints.keys { endpoints[key]!.sort() }
        return endpoints
    }
}
