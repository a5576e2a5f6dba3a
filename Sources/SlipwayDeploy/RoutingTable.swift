import NIOHTTP1

/// One healthy instance of a version, reachable over HTTP/1.1.
public struct Backend: Sendable, Hashable, Codable {
    public var version: String
    public var host: String
    public var port: Int

    public init(version: String, host: String, port: Int) {
        self.version = version
        self.host = host
        self.port = port
    }
}

/// Pins requests carrying a header or cookie with an exact value to one version (A/B testing).
public struct MatchRule: Sendable, Equatable, Codable {
    public enum Kind: String, Codable, Sendable {
        case header, cookie
    }

    public var kind: Kind
    /// Header name (case-insensitive) or cookie name (case-sensitive).
    public var name: String
    /// The exact value that must be present.
    public var value: String
    /// The version such requests go to.
    public var version: String

    public init(kind: Kind, name: String, value: String, version: String) {
        self.kind = kind
        self.name = name
        self.value = value
        self.version = version
    }
}

/// What the router does with new requests. Replaced as a whole by `TrafficRouter.update(_:)`.
public struct RoutingTable: Sendable, Equatable, Codable {
    /// Healthy instances only; the supervisor decides health.
    public var backends: [Backend]
    /// Version -> relative weight (e.g. stable 90, canary 10); 0 = no random traffic.
    public var weights: [String: Int]
    /// Pinned requests (A/B): first match wins, even if that version's weight is 0.
    public var rules: [MatchRule]
    /// When set, the router sets a cookie with the chosen version and honours it while that version has backends.
    public var stickyCookie: String?

    public init(backends: [Backend], weights: [String: Int], rules: [MatchRule], stickyCookie: String?) {
        self.backends = backends
        self.weights = weights
        self.rules = rules
        self.stickyCookie = stickyCookie
    }
}

/// Where one request goes.
struct RouteDecision: Sendable, Equatable {
    var version: String
    var backend: Backend
    /// The sticky cookie to set on the response (`name`), when the client is not yet pinned by it.
    var setStickyCookie: String?
    /// `version` as it may appear in a header value and a cookie (see `headerSafe`).
    var versionHeader: String

    init(version: String, backend: Backend, setStickyCookie: String?, versionHeader: String? = nil) {
        self.version = version
        self.backend = backend
        self.setStickyCookie = setStickyCookie
        self.versionHeader = versionHeader ?? headerSafe(version)
    }
}

/// A value safe in a header and a cookie: characters other than visible ASCII (and `;`, `,`, `"`, `\\`, which
/// would break a cookie) become `_`. Versions are normally semver-like and pass unchanged.
func headerSafe(_ value: String) -> String {
    guard !value.utf8.allSatisfy(isSafeHeaderByte) else { return value }
    return String(decoding: value.utf8.map { isSafeHeaderByte($0) ? $0 : UInt8(ascii: "_") }, as: UTF8.self)
}

private func isSafeHeaderByte(_ byte: UInt8) -> Bool {
    byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: ";") && byte != UInt8(ascii: ",")
        && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\")
}

/// A routing table prepared for cheap per-request decisions (a class: one retain to snapshot it).
final class CompiledTable: Sendable {
    let table: RoutingTable
    /// Backends per version, in table order.
    let backendsByVersion: [String: [Backend]]
    /// Versions with weight > 0, sorted by name so a seeded generator gives repeatable choices.
    let weighted: [(version: String, weight: Int)]
    let totalWeight: Int
    let needsCookies: Bool
    /// Version -> header-safe form, only for the versions that need changing (usually none).
    let unsafeVersions: [String: String]
    /// The sticky cookie name, or nil when unset or not a valid cookie name (then stickiness is off).
    let stickyCookie: String?

    init(_ table: RoutingTable) {
        self.table = table
        var byVersion: [String: [Backend]] = [:]
        for backend in table.backends {
            byVersion[backend.version, default: []].append(backend)
        }
        self.backendsByVersion = byVersion
        // Clamped so that the sums below cannot overflow, whoever built the table.
        let weighted = table.weights.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { (version: $0.key, weight: min($0.value, AgentLimits.weights.upperBound)) }
        self.weighted = weighted
        self.totalWeight = weighted.reduce(0) { $0 + $1.weight }
        var unsafe: [String: String] = [:]
        for version in Set(table.backends.map(\.version)).union(table.weights.keys) where headerSafe(version) != version {
            unsafe[version] = headerSafe(version)
        }
        self.unsafeVersions = unsafe
        let cookie = table.stickyCookie.flatMap { name in
            !name.isEmpty && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) } ? name : nil
        }
        self.stickyCookie = cookie
        self.needsCookies = cookie != nil || table.rules.contains { $0.kind == .cookie }
    }
}

/// A small, fast, non-cryptographic generator (SplitMix64) for the weighted choice; avoids a syscall per request.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The router's routing state: the current table, round-robin positions, the random generator, and backends
/// passively ejected after a connection failure. A value type kept behind a lock by `TrafficRouter`; every method is
/// pure state manipulation, side effects (closing connections, …) are done by the caller after the lock.
struct RoutingState: Sendable {
    private(set) var compiled: CompiledTable
    private var roundRobin: [String: Int] = [:]
    private var random: SplitMix64
    /// Backend -> instant until which it is skipped while its version (or another version) has other backends.
    private var ejectedUntil: [Backend: ContinuousClock.Instant] = [:]
    /// How long a backend whose connection failed is skipped.
    var ejectionDuration: Duration = .seconds(3)

    init(table: RoutingTable, seed: UInt64) {
        self.compiled = CompiledTable(table)
        self.random = SplitMix64(seed: seed)
    }

    /// Installs a new table. Returns the backends that are no longer in it (their idle connections can be closed).
    mutating func update(_ table: RoutingTable) -> Set<Backend> {
        let old = Set(self.compiled.table.backends)
        self.compiled = CompiledTable(table)
        let new = Set(table.backends)
        self.ejectedUntil = self.ejectedUntil.filter { new.contains($0.key) }
        self.roundRobin = self.roundRobin.filter { self.compiled.backendsByVersion[$0.key] != nil }
        return old.subtracting(new)
    }

    mutating func eject(_ backend: Backend, now: ContinuousClock.Instant) {
        guard self.compiled.table.backends.contains(backend) else { return }
        self.ejectedUntil[backend] = now + self.ejectionDuration
    }

    mutating func markHealthy(_ backend: Backend) {
        if !self.ejectedUntil.isEmpty {
            self.ejectedUntil.removeValue(forKey: backend)
        }
    }

    /// Chooses a version and a backend for a request with these headers, or nil when no backend can take it (503).
    mutating func route(_ headers: HTTPHeaders, now: ContinuousClock.Instant) -> RouteDecision? {
        let compiled = self.compiled
        let table = compiled.table
        var cookies: [(name: Substring, value: Substring)] = []
        if compiled.needsCookies {
            cookies = parseCookies(headers)
        }

        // 1. Pinned by a rule.
        var pinned: String?
        for rule in table.rules {
            let matches: Bool
            switch rule.kind {
            case .header:
                matches = headers[rule.name].contains { $0 == rule.value }
            case .cookie:
                matches = cookies.contains { $0.name == rule.name && $0.value == rule.value }
            }
            if matches {
                pinned = rule.version
                break
            }
        }
        // 2. Sticky cookie naming a version that still has backends.
        var sticky: String?
        if pinned == nil, let name = compiled.stickyCookie,
            let value = cookies.first(where: { $0.name == name })?.value,
            compiled.backendsByVersion[String(value)] != nil
        {
            sticky = String(value)
        }
        let preferred = pinned ?? sticky
        let stickyToSet: String? = (pinned == nil && sticky == nil) ? compiled.stickyCookie : nil

        if let preferred, let backend = self.pickBackend(preferred, now: now, allowEjected: false) {
            return self.decision(preferred, backend, sticky: nil)
        }
        // 3. Weighted random choice among the versions with weight > 0 (and backends), excluding any tried.
        var excluded: [String] = preferred.map { [$0] } ?? []
        while true {
            guard let version = self.pickWeightedVersion(excluding: excluded) else { break }
            if let backend = self.pickBackend(version, now: now, allowEjected: false) {
                return self.decision(version, backend, sticky: stickyToSet)
            }
            excluded.append(version)
        }
        // 4. Every candidate is ejected (or has no backend): better to try an ejected backend than to fail outright.
        if let preferred, let backend = self.pickBackend(preferred, now: now, allowEjected: true) {
            return self.decision(preferred, backend, sticky: nil)
        }
        for (version, _) in compiled.weighted {
            if let backend = self.pickBackend(version, now: now, allowEjected: true) {
                return self.decision(version, backend, sticky: stickyToSet)
            }
        }
        return nil
    }

    private func decision(_ version: String, _ backend: Backend, sticky: String?) -> RouteDecision {
        let header = self.compiled.unsafeVersions.isEmpty ? version : (self.compiled.unsafeVersions[version] ?? version)
        return RouteDecision(version: version, backend: backend, setStickyCookie: sticky, versionHeader: header)
    }

    private mutating func pickWeightedVersion(excluding excluded: [String]) -> String? {
        let candidates = self.compiled.weighted
        var total = self.compiled.totalWeight
        if !excluded.isEmpty {
            total = 0
            for entry in candidates where !excluded.contains(entry.version) {
                total += entry.weight
            }
        }
        guard total > 0 else { return nil }
        var point = Int(self.random.next() % UInt64(total))
        for entry in candidates where excluded.isEmpty || !excluded.contains(entry.version) {
            if point < entry.weight {
                return entry.version
            }
            point -= entry.weight
        }
        return nil
    }

    /// Round-robin among the version's backends, skipping ejected ones unless `allowEjected`.
    private mutating func pickBackend(_ version: String, now: ContinuousClock.Instant, allowEjected: Bool) -> Backend? {
        guard let backends = self.compiled.backendsByVersion[version], !backends.isEmpty else { return nil }
        let start = self.roundRobin[version, default: 0]
        for offset in 0..<backends.count {
            let index = (start &+ offset) % backends.count
            let backend = backends[index]
            if !allowEjected, !self.ejectedUntil.isEmpty, let until = self.ejectedUntil[backend], until > now {
                continue
            }
            self.roundRobin[version] = (index &+ 1) % backends.count
            return backend
        }
        return nil
    }
}

/// Parses every `Cookie` header into name/value pairs (RFC 6265 `name=value; name2=value2`).
func parseCookies(_ headers: HTTPHeaders) -> [(name: Substring, value: Substring)] {
    var result: [(name: Substring, value: Substring)] = []
    for header in headers["cookie"] {
        for pair in header.split(separator: ";") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let name = pair[..<equals].trimmingSpaces()
            var value = pair[pair.index(after: equals)...].trimmingSpaces()
            if value.count >= 2, value.first == "\"", value.last == "\"" {
                value = value.dropFirst().dropLast()
            }
            if !name.isEmpty {
                result.append((name, value))
            }
        }
    }
    return result
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
