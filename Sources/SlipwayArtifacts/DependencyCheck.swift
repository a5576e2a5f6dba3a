import Foundation

/// Advisory severity, ordered: a check fails on findings at or above a configured level.
public enum Severity: Int, Sendable, Comparable, Codable, CaseIterable, CustomStringConvertible {
    case unknown = 0, low, moderate, high, critical

    /// "low", "moderate"/"medium", "high", "critical" (any case); "unknown" too. Nil for anything else.
    public init?(name: String) {
        switch name.trimmingCharacters(in: .whitespaces).lowercased() {
        case "unknown": self = .unknown
        case "low": self = .low
        case "moderate", "medium": self = .moderate
        case "high": self = .high
        case "critical": self = .critical
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .unknown: "unknown"
        case .low: "low"
        case .moderate: "moderate"
        case .high: "high"
        case .critical: "critical"
        }
    }

    public var description: String { name }

    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One OSV range event (https://ossf.github.io/osv-schema/#affectedrangesevents-fields).
public enum RangeEvent: Sendable, Equatable {
    case introduced(String)
    case fixed(String)
    case lastAffected(String)
    case limit(String)

    public var version: String {
        switch self {
        case .introduced(let v), .fixed(let v), .lastAffected(let v), .limit(let v): v
        }
    }
}

/// One OSV `affected[].ranges[]` entry.
public struct AffectedRange: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable { case semver = "SEMVER", ecosystem = "ECOSYSTEM", git = "GIT" }
    public var type: Kind
    public var events: [RangeEvent]

    public init(type: Kind, events: [RangeEvent]) {
        self.type = type
        self.events = events
    }
}

/// One affected package of one OSV entry (an entry naming several packages gives several advisories).
public struct Advisory: Sendable, Equatable {
    public var id: String
    public var aliases: [String]
    public var summary: String
    public var severity: Severity
    /// OSV ecosystem (`npm`, `PyPI`, `crates.io`, `Go`, `SwiftURL`, …).
    public var ecosystem: String
    public var package: String
    public var ranges: [AffectedRange]
    /// Explicitly listed affected versions.
    public var versions: [String]
    /// CVSS v3 vector the severity was computed from, if that is where it came from.
    public var cvssVector: String?

    public init(id: String, aliases: [String] = [], summary: String = "", severity: Severity = .unknown,
                ecosystem: String, package: String, ranges: [AffectedRange] = [], versions: [String] = [],
                cvssVector: String? = nil) {
        self.id = id
        self.aliases = aliases
        self.summary = summary
        self.severity = severity
        self.ecosystem = ecosystem
        self.package = package
        self.ranges = ranges
        self.versions = versions
        self.cvssVector = cvssVector
    }
}

/// A component affected by an advisory.
public struct DependencyFinding: Sendable, Equatable, Codable {
    public var advisoryID: String
    public var aliases: [String]
    public var component: Component
    public var severity: Severity
    public var summary: String
    /// The lowest fixed version above the component's version, when the advisory names one.
    public var fixedIn: String?

    public init(advisoryID: String, aliases: [String], component: Component, severity: Severity, summary: String, fixedIn: String?) {
        self.advisoryID = advisoryID
        self.aliases = aliases
        self.component = component
        self.severity = severity
        self.summary = summary
        self.fixedIn = fixedIn
    }
}

/// Why an advisory file could not be loaded.
public enum AdvisoryError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidJSON
    case invalidEntry(index: Int, reason: String)
    case unexpectedShape(String)

    public var description: String {
        switch self {
        case .invalidJSON: "advisory file is not valid JSON"
        case .invalidEntry(let index, let reason): "advisory entry \(index): \(reason)"
        case .unexpectedShape(let shape): "advisory file must be an OSV entry, an array of them or {\"vulns\": […]}; found \(shape)"
        }
    }
}

/// Checks SBOM components against an offline OSV advisory file.
public enum DependencyCheck {
    /// Parses an advisory file: a JSON array of OSV entries, a single OSV entry, or {"vulns": [...]} (OSV API
    /// batch shape, also `{"results": [{"vulns": [...]}]}`). Withdrawn entries are dropped.
    public static func loadAdvisories(_ data: Data) throws -> [Advisory] {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw AdvisoryError.invalidJSON
        }
        let entries: [Any]
        if let array = root as? [Any] {
            entries = array
        } else if let object = root as? [String: Any] {
            if let vulns = object["vulns"] {
                guard let list = vulns as? [Any] else { throw AdvisoryError.unexpectedShape("`vulns` that is not an array") }
                entries = list
            } else if let results = object["results"] as? [Any] {
                entries = results.flatMap { ($0 as? [String: Any])?["vulns"] as? [Any] ?? [] }
            } else if object["id"] != nil {
                entries = [object]
            } else {
                throw AdvisoryError.unexpectedShape("an object without `id` or `vulns`")
            }
        } else {
            throw AdvisoryError.unexpectedShape("a JSON scalar")
        }
        var advisories: [Advisory] = []
        for (index, entry) in entries.enumerated() {
            guard let entry = entry as? [String: Any] else { throw AdvisoryError.invalidEntry(index: index, reason: "not an object") }
            advisories += try parseEntry(entry, index: index)
        }
        return advisories
    }

    static func parseEntry(_ entry: [String: Any], index: Int) throws -> [Advisory] {
        func fail(_ reason: String) -> AdvisoryError { .invalidEntry(index: index, reason: reason) }
        guard let id = entry["id"] as? String, !id.isEmpty else { throw fail("no `id`") }
        if let withdrawn = entry["withdrawn"] as? String, !withdrawn.isEmpty { return [] }
        let aliases = (entry["aliases"] as? [Any])?.compactMap { $0 as? String } ?? []
        var summary = (entry["summary"] as? String) ?? ""
        if summary.isEmpty, let details = entry["details"] as? String {
            summary = String(details.split(separator: "\n", omittingEmptySubsequences: true).first ?? "")
        }
        let topSeverity = severity(databaseSpecific: entry["database_specific"], severities: entry["severity"])
        guard let affectedList = entry["affected"] else { return [] }
        guard let affectedArray = affectedList as? [Any] else { throw fail("`affected` is not an array") }

        var result: [Advisory] = []
        for (position, item) in affectedArray.enumerated() {
            guard let affected = item as? [String: Any] else { throw fail("affected[\(position)] is not an object") }
            guard let package = affected["package"] as? [String: Any],
                  let ecosystem = package["ecosystem"] as? String, let name = package["name"] as? String else {
                // OSV allows affected entries without a package (e.g. only a git repository); nothing to match.
                continue
            }
            var ranges: [AffectedRange] = []
            if let rawRanges = affected["ranges"] {
                guard let list = rawRanges as? [Any] else { throw fail("affected[\(position)].ranges is not an array") }
                for (r, rawRange) in list.enumerated() {
                    guard let range = rawRange as? [String: Any], let typeName = range["type"] as? String,
                          let rawEvents = range["events"] as? [Any] else {
                        throw fail("affected[\(position)].ranges[\(r)] needs `type` and `events`")
                    }
                    guard let type = AffectedRange.Kind(rawValue: typeName.uppercased()) else { continue }
                    var events: [RangeEvent] = []
                    for rawEvent in rawEvents {
                        guard let event = rawEvent as? [String: Any] else { throw fail("affected[\(position)].ranges[\(r)]: event is not an object") }
                        if let v = event["introduced"] as? String { events.append(.introduced(v)) }
                        else if let v = event["fixed"] as? String { events.append(.fixed(v)) }
                        else if let v = event["last_affected"] as? String { events.append(.lastAffected(v)) }
                        else if let v = event["limit"] as? String { events.append(.limit(v)) }
                        else { throw fail("affected[\(position)].ranges[\(r)]: unknown event \(event.keys.sorted())") }
                    }
                    ranges.append(AffectedRange(type: type, events: events))
                }
            }
            var versions: [String] = []
            if let rawVersions = affected["versions"] {
                guard let list = rawVersions as? [Any] else { throw fail("affected[\(position)].versions is not an array") }
                versions = list.compactMap { $0 as? String }
            }
            // Per-package severity (OSV allows it on affected[]) wins over the entry's.
            let own = severity(databaseSpecific: affected["database_specific"], severities: affected["severity"])
            let chosen = own.severity != .unknown ? own : topSeverity
            result.append(Advisory(id: id, aliases: aliases, summary: summary, severity: chosen.severity,
                                   ecosystem: ecosystem, package: name, ranges: ranges, versions: versions,
                                   cvssVector: chosen.vector))
        }
        return result
    }

    /// `database_specific.severity` (GitHub: LOW/MODERATE/HIGH/CRITICAL) first, else a CVSS v3 vector in `severity[]`.
    static func severity(databaseSpecific: Any?, severities: Any?) -> (severity: Severity, vector: String?) {
        if let specific = databaseSpecific as? [String: Any], let name = specific["severity"] as? String,
           let severity = Severity(name: name), severity != .unknown {
            return (severity, nil)
        }
        guard let list = severities as? [Any] else { return (.unknown, nil) }
        for item in list {
            guard let entry = item as? [String: Any], let type = entry["type"] as? String,
                  let score = entry["score"] as? String else { continue }
            guard type.uppercased() == "CVSS_V3" || score.hasPrefix("CVSS:3.") else { continue }
            if let base = CVSS.baseScore(vector: score) {
                return (CVSS.severity(score: base), score)
            }
            if let number = Double(score) { return (CVSS.severity(score: number), nil) }
        }
        return (.unknown, nil)
    }

    /// Every (advisory, component) match: same ecosystem, same package (PyPI names PEP 503 normalized, Swift
    /// URLs normalized, others exact) and a version listed in `versions` or inside one of the SEMVER/ECOSYSTEM
    /// ranges. Sorted by severity (highest first), then advisory id, then purl; one finding per advisory and
    /// component.
    public static func check(components: [Component], advisories: [Advisory]) -> [DependencyFinding] {
        var findings: [String: DependencyFinding] = [:]
        var byKey: [String: [Component]] = [:]
        for component in components {
            byKey[matchKey(ecosystem: component.ecosystem.rawValue, name: component.name), default: []].append(component)
        }
        for advisory in advisories {
            guard let candidates = byKey[matchKey(ecosystem: advisory.ecosystem, name: advisory.package)] else { continue }
            let scheme = VersionScheme(osvEcosystem: advisory.ecosystem)
            for component in candidates {
                guard let fixedIn = affects(advisory, version: component.version, scheme: scheme) else { continue }
                let key = advisory.id + "\u{0}" + component.purl + "\u{0}" + component.sourceFile
                if var existing = findings[key] {
                    // The same id through several affected entries: keep the worst severity and a fix if any.
                    existing.severity = max(existing.severity, advisory.severity)
                    if existing.fixedIn == nil { existing.fixedIn = fixedIn.fixed }
                    findings[key] = existing
                } else {
                    findings[key] = DependencyFinding(advisoryID: advisory.id, aliases: advisory.aliases, component: component,
                                                      severity: advisory.severity, summary: advisory.summary, fixedIn: fixedIn.fixed)
                }
            }
        }
        return findings.values.sorted {
            if $0.severity != $1.severity { return $0.severity > $1.severity }
            if $0.advisoryID != $1.advisoryID { return $0.advisoryID < $1.advisoryID }
            if $0.component.purl != $1.component.purl { return $0.component.purl < $1.component.purl }
            return $0.component.sourceFile < $1.component.sourceFile
        }
    }

    static func matchKey(ecosystem: String, name: String) -> String {
        // "Debian:11"-style suffixes do not apply to our ecosystems; compare the base, case-insensitively.
        let base = (ecosystem.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ecosystem).lowercased()
        let normalized: String
        switch base {
        case "pypi": normalized = PyPI.normalize(name)
        case "swifturl": normalized = SwiftPackageName.normalize(name).lowercased()
        default: normalized = name
        }
        return base + "\u{0}" + normalized
    }

    /// Whether `version` is affected; when it is, the lowest `fixed` version above it (if any).
    struct Match { var fixed: String? }

    static func affects(_ advisory: Advisory, version: String, scheme: VersionScheme) -> Match? {
        var affected = advisory.versions.contains(version)
            || advisory.versions.contains { scheme.compare($0, version) == .orderedSame }
        for range in advisory.ranges {
            if affected { break }
            switch range.type {
            case .git: continue  // commit ranges cannot be evaluated against released versions
            case .semver: affected = isAffected(version, range: range, scheme: .semver)
            case .ecosystem: affected = isAffected(version, range: range, scheme: scheme)
            }
        }
        guard affected else { return nil }
        // The lowest fix above the version, across ranges.
        var best: String?
        for range in advisory.ranges where range.type != .git {
            let rangeScheme: VersionScheme = range.type == .semver ? .semver : scheme
            for case .fixed(let fixed) in range.events where rangeScheme.compare(fixed, version) == .orderedDescending {
                if let current = best, rangeScheme.compare(fixed, current) != .orderedAscending { continue }
                best = fixed
            }
        }
        return Match(fixed: best)
    }

    /// OSV evaluation: events sorted by version ("introduced: 0" first), then walked in order; the version is
    /// affected after an `introduced` at or below it, and not after a `fixed` at or below it or a
    /// `last_affected` below it. A `limit` at or below the version excludes it.
    static func isAffected(_ version: String, range: AffectedRange, scheme: VersionScheme) -> Bool {
        func key(_ event: RangeEvent) -> String? {
            if case .introduced("0") = event { return nil }
            return event.version
        }
        let sorted = range.events.enumerated().sorted { lhs, rhs in
            switch (key(lhs.element), key(rhs.element)) {
            case (nil, nil): return lhs.offset < rhs.offset
            case (nil, _): return true
            case (_, nil): return false
            case let (l?, r?):
                let order = scheme.compare(l, r)
                return order == .orderedSame ? lhs.offset < rhs.offset : order == .orderedAscending
            }
        }.map(\.element)
        var affected = false
        for event in sorted {
            switch event {
            case .introduced(let v):
                if v == "0" || scheme.compare(version, v) != .orderedAscending { affected = true }
            case .fixed(let v):
                if scheme.compare(version, v) != .orderedAscending { affected = false }
            case .lastAffected(let v):
                if scheme.compare(version, v) == .orderedDescending { affected = false }
            case .limit(let v):
                if scheme.compare(version, v) != .orderedAscending { return false }
            }
        }
        return affected
    }
}

// MARK: - Versions

/// How versions of an ecosystem are ordered.
public enum VersionScheme: Sendable, Equatable {
    /// SemVer 2.0 precedence (a leading "v" is ignored, build metadata ignored, missing minor/patch are 0).
    case semver
    /// PEP 440 (epoch, release, pre/post/dev, local).
    case pep440

    public init(osvEcosystem: String) {
        self = osvEcosystem.lowercased().hasPrefix("pypi") ? .pep440 : .semver
    }

    public func compare(_ lhs: String, _ rhs: String) -> ComparisonResult {
        switch self {
        case .semver:
            if let l = SemanticVersion(lhs), let r = SemanticVersion(rhs) { return l.compare(r) }
        case .pep440:
            if let l = PEP440Version(lhs), let r = PEP440Version(rhs) { return l.compare(r) }
        }
        return VersionOrdering.fallback(lhs, rhs)
    }
}

enum VersionOrdering {
/// Compares digit runs numerically and everything else lexically: a total order for unparseable versions.
static func fallback(_ lhs: String, _ rhs: String) -> ComparisonResult {
    func chunks(_ s: String) -> [Substring] {
        var result: [Substring] = []
        var start = s.startIndex
        var index = s.startIndex
        while index < s.endIndex {
            let next = s.index(after: index)
            if next < s.endIndex, s[index].isASCIIDigit != s[next].isASCIIDigit {
                result.append(s[start..<next])
                start = next
            }
            index = next
        }
        if start < s.endIndex { result.append(s[start...]) }
        return result.filter { $0 != "." && $0 != "-" && $0 != "_" }
    }
    let a = chunks(lhs), b = chunks(rhs)
    for (x, y) in zip(a, b) {
        let order: ComparisonResult
        if x.first?.isASCIIDigit == true, y.first?.isASCIIDigit == true {
            order = digits(x, y)
        } else {
            order = x == y ? .orderedSame : (x < y ? .orderedAscending : .orderedDescending)
        }
        if order != .orderedSame { return order }
    }
    return a.count == b.count ? .orderedSame : (a.count < b.count ? .orderedAscending : .orderedDescending)
}

/// Numeric comparison of digit strings of any length.
static func digits<S: StringProtocol>(_ lhs: S, _ rhs: S) -> ComparisonResult {
    let l = lhs.drop { $0 == "0" }, r = rhs.drop { $0 == "0" }
    if l.count != r.count { return l.count < r.count ? .orderedAscending : .orderedDescending }
    if l.elementsEqual(r) { return .orderedSame }
    return l.lexicographicallyPrecedes(r) ? .orderedAscending : .orderedDescending
}
}

private extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}

/// A SemVer 2.0 version (https://semver.org/#spec-item-11), leniently parsed.
public struct SemanticVersion: Sendable, Equatable {
    /// Numeric release components as digit strings (arbitrary size).
    public var release: [String]
    public var prerelease: [String]

    public init?(_ text: String) {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        if s.first == "v" || s.first == "V" { s = s.dropFirst() }
        if let plus = s.firstIndex(of: "+") { s = s[..<plus] }  // build metadata (and Go's +incompatible)
        var pre: Substring = ""
        if let dash = s.firstIndex(of: "-") {
            pre = s[s.index(after: dash)...]
            s = s[..<dash]
            if pre.isEmpty { return nil }
        }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.count <= 4, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }) else { return nil }
        release = parts.map(String.init)
        while release.count < 3 { release.append("0") }
        prerelease = pre.isEmpty ? [] : pre.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard prerelease.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") } }) else { return nil }
    }

    public func compare(_ other: SemanticVersion) -> ComparisonResult {
        for i in 0..<max(release.count, other.release.count) {
            let order = VersionOrdering.digits(i < release.count ? release[i] : "0", i < other.release.count ? other.release[i] : "0")
            if order != .orderedSame { return order }
        }
        switch (prerelease.isEmpty, other.prerelease.isEmpty) {
        case (true, true): return .orderedSame
        case (true, false): return .orderedDescending
        case (false, true): return .orderedAscending
        case (false, false): break
        }
        for (a, b) in zip(prerelease, other.prerelease) {
            let aNumeric = a.allSatisfy(\.isASCIIDigit), bNumeric = b.allSatisfy(\.isASCIIDigit)
            let order: ComparisonResult
            switch (aNumeric, bNumeric) {
            case (true, true): order = VersionOrdering.digits(a, b)
            case (true, false): order = .orderedAscending  // numeric identifiers have lower precedence
            case (false, true): order = .orderedDescending
            case (false, false): order = a == b ? .orderedSame : (a.utf8.lexicographicallyPrecedes(b.utf8) ? .orderedAscending : .orderedDescending)
            }
            if order != .orderedSame { return order }
        }
        if prerelease.count == other.prerelease.count { return .orderedSame }
        return prerelease.count < other.prerelease.count ? .orderedAscending : .orderedDescending
    }
}

/// A PEP 440 version (https://peps.python.org/pep-0440/), normalized as the spec says (`1.0a1`, `1.0-alpha.1`,
/// `1.0.post1`, `1.0-1`, `1.0.dev0`, `v1.0`, `1!2.0`, `1.0+local`).
public struct PEP440Version: Sendable, Equatable {
    public var epoch: Int
    public var release: [Int]
    /// (phase 0 = a, 1 = b, 2 = rc; number)
    public var pre: (phase: Int, number: Int)?
    public var post: Int?
    public var dev: Int?
    public var local: [String]

    public static func == (lhs: PEP440Version, rhs: PEP440Version) -> Bool { lhs.compare(rhs) == .orderedSame }

    public init?(_ text: String) {
        var s = Array(text.trimmingCharacters(in: .whitespaces).lowercased())
        var i = 0
        func peekNumber() -> Int? {
            var j = i
            var digits = ""
            while j < s.count, s[j].isASCIIDigit { digits.append(s[j]); j += 1 }
            guard !digits.isEmpty, let value = Int(digits) else { return nil }
            i = j
            return value
        }
        func skipSeparator() -> Bool {
            if i < s.count, s[i] == "." || s[i] == "-" || s[i] == "_" { i += 1; return true }
            return false
        }
        func match(_ words: [String]) -> String? {
            for word in words.sorted(by: { $0.count > $1.count }) {
                let w = Array(word)
                if i + w.count <= s.count, Array(s[i..<i + w.count]) == w { i += w.count; return word }
            }
            return nil
        }
        if let plus = s.firstIndex(of: "+") {
            local = s[(plus + 1)...].split(whereSeparator: { $0 == "." || $0 == "-" || $0 == "_" }).map { String($0) }
            if local.isEmpty { return nil }
            s = Array(s[..<plus])
        } else {
            local = []
        }
        if i < s.count, s[i] == "v" { i += 1 }
        guard var first = peekNumber() else { return nil }
        epoch = 0
        if i < s.count, s[i] == "!" {
            epoch = first
            i += 1
            guard let value = peekNumber() else { return nil }
            first = value
        }
        release = [first]
        while i + 1 < s.count, s[i] == ".", s[i + 1].isASCIIDigit {
            i += 1
            guard let value = peekNumber() else { return nil }
            release.append(value)
        }
        // pre-release
        var save = i
        _ = skipSeparator()
        if let word = match(["alpha", "a", "beta", "b", "preview", "pre", "rc", "c"]) {
            let phase = ["alpha": 0, "a": 0, "beta": 1, "b": 1][word] ?? 2
            save = i
            _ = skipSeparator()
            if let number = peekNumber() { pre = (phase, number) } else { i = save; pre = (phase, 0) }
        } else {
            i = save
            pre = nil
        }
        // post-release
        save = i
        if i < s.count, s[i] == "-", i + 1 < s.count, s[i + 1].isASCIIDigit {
            i += 1
            post = peekNumber()
        } else {
            _ = skipSeparator()
            if match(["post", "rev", "r"]) != nil {
                let afterWord = i
                _ = skipSeparator()
                if let number = peekNumber() { post = number } else { i = afterWord; post = 0 }
            } else {
                i = save
                post = nil
            }
        }
        // dev release
        save = i
        _ = skipSeparator()
        if match(["dev"]) != nil {
            let afterWord = i
            _ = skipSeparator()
            if let number = peekNumber() { dev = number } else { i = afterWord; dev = 0 }
        } else {
            i = save
            dev = nil
        }
        guard i == s.count else { return nil }
    }

    public func compare(_ other: PEP440Version) -> ComparisonResult {
        func order(_ a: Int, _ b: Int) -> ComparisonResult { a == b ? .orderedSame : (a < b ? .orderedAscending : .orderedDescending) }
        var result = order(epoch, other.epoch)
        if result != .orderedSame { return result }
        var a = release, b = other.release
        while a.count > 1, a.last == 0 { a.removeLast() }
        while b.count > 1, b.last == 0 { b.removeLast() }
        for k in 0..<max(a.count, b.count) {
            result = order(k < a.count ? a[k] : 0, k < b.count ? b[k] : 0)
            if result != .orderedSame { return result }
        }
        // PEP 440 sort keys: a dev-only release sorts before any pre-release; no pre-release sorts after all of them.
        func preKey(_ v: PEP440Version) -> (Int, Int) {
            if let pre = v.pre { return (pre.phase, pre.number) }
            if v.post == nil, v.dev != nil { return (-1, 0) }
            return (3, 0)
        }
        let (pa, pb) = (preKey(self), preKey(other))
        result = order(pa.0, pb.0); if result != .orderedSame { return result }
        result = order(pa.1, pb.1); if result != .orderedSame { return result }
        result = order(post ?? -1, other.post ?? -1); if result != .orderedSame { return result }
        result = order(dev ?? Int.max, other.dev ?? Int.max); if result != .orderedSame { return result }
        // Local versions: any local label sorts after none; segments compare numerically when both numeric.
        for (x, y) in zip(local, other.local) {
            let xi = Int(x), yi = Int(y)
            switch (xi, yi) {
            case let (p?, q?): result = order(p, q)
            case (_?, nil): result = .orderedDescending
            case (nil, _?): result = .orderedAscending
            case (nil, nil): result = x == y ? .orderedSame : (x < y ? .orderedAscending : .orderedDescending)
            }
            if result != .orderedSame { return result }
        }
        return order(local.count, other.local.count)
    }
}

// MARK: - CVSS

/// CVSS v3.0/v3.1 base score (https://www.first.org/cvss/v3.1/specification-document, section 7).
public enum CVSS {
    /// The base score of a `CVSS:3.x/AV:…/AC:…/PR:…/UI:…/S:…/C:…/I:…/A:…` vector (temporal and environmental
    /// metrics may follow and are ignored); nil when the vector is not a valid v3 vector.
    public static func baseScore(vector: String) -> Double? {
        let parts = vector.trimmingCharacters(in: .whitespaces).split(separator: "/", omittingEmptySubsequences: false)
        guard let head = parts.first, head == "CVSS:3.0" || head == "CVSS:3.1" else { return nil }
        var metrics: [String: String] = [:]
        for part in parts.dropFirst() {
            let pair = part.split(separator: ":", omittingEmptySubsequences: false)
            guard pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty, metrics[String(pair[0])] == nil else { return nil }
            metrics[String(pair[0])] = String(pair[1])
        }
        let cia: [String: Double] = ["H": 0.56, "L": 0.22, "N": 0]
        guard let scope = metrics["S"], scope == "U" || scope == "C" else { return nil }
        let changed = scope == "C"
        guard let av = ["N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2][metrics["AV"] ?? ""],
              let ac = ["L": 0.77, "H": 0.44][metrics["AC"] ?? ""],
              let pr = (changed ? ["N": 0.85, "L": 0.68, "H": 0.5] : ["N": 0.85, "L": 0.62, "H": 0.27])[metrics["PR"] ?? ""],
              let ui = ["N": 0.85, "R": 0.62][metrics["UI"] ?? ""],
              let c = cia[metrics["C"] ?? ""], let i = cia[metrics["I"] ?? ""], let a = cia[metrics["A"] ?? ""] else { return nil }
        let iss = 1 - (1 - c) * (1 - i) * (1 - a)
        let impact = changed ? 7.52 * (iss - 0.029) - 3.25 * pow(iss - 0.02, 15) : 6.42 * iss
        let exploitability = 8.22 * av * ac * pr * ui
        if impact <= 0 { return 0 }
        return roundUp(min(changed ? 1.08 * (impact + exploitability) : impact + exploitability, 10))
    }

    /// CVSS v3.1 Appendix A `Roundup`: the smallest number with one decimal that is >= the input,
    /// robust to floating-point noise.
    public static func roundUp(_ value: Double) -> Double {
        let integer = Int((value * 100_000).rounded())
        if integer % 10_000 == 0 { return Double(integer) / 100_000 }
        return (Double(integer / 10_000) + 1) / 10
    }

    /// 0.1–3.9 low, 4.0–6.9 moderate (medium), 7.0–8.9 high, 9.0–10.0 critical; 0 (none) is unknown.
    public static func severity(score: Double) -> Severity {
        switch score {
        case 9.0...: .critical
        case 7.0..<9.0: .high
        case 4.0..<7.0: .moderate
        case 0.1..<4.0: .low
        default: .unknown
        }
    }
}
