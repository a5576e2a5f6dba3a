import Foundation

/// A parsed, validated pipeline file. Strings that may hold `${{ }}` are kept as source text and
/// resolved at run time, when contexts such as `matrix` and `needs` are known.
public struct Pipeline: Sendable {
    public var name: String
    public var file: String
    public var env: [EnvironmentVariable]
    public var triggers: Triggers
    public var jobs: [Job]
    public var environments: [EnvironmentSpec] = []
    /// Top-level `concurrency` (acted on by the server).
    public var concurrency: ConcurrencyPolicy?

    public init(name: String, file: String, env: [EnvironmentVariable] = [], triggers: Triggers = .init(), jobs: [Job] = []) {
        self.name = name
        self.file = file
        self.env = env
        self.triggers = triggers
        self.jobs = jobs
    }

    public func job(_ id: String) -> Job? { jobs.first { $0.id == id } }

    /// Jobs by id (the first of a duplicated id), built once by callers that look up many: `job(_:)` scans.
    public var jobsByID: JobTable { JobTable(jobs) }
}

/// Jobs looked up by id through an index into the array: building it copies no `Job`.
public struct JobTable: Sendable {
    public let jobs: [Job]
    private let index: [String: Int]

    public init(_ jobs: [Job]) {
        self.jobs = jobs
        var index = [String: Int](minimumCapacity: jobs.count)
        for (position, job) in jobs.enumerated() where index[job.id] == nil { index[job.id] = position }
        self.index = index
    }

    public subscript(_ id: String) -> Job? {
        index[id].map { jobs[$0] }
    }
}

public struct EnvironmentVariable: Sendable, Equatable, Codable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

public struct Triggers: Sendable, Equatable {
    /// True when the file has an `on:` block; without one every event runs the pipeline.
    public var declared: Bool = false
    public var push: RefFilter?
    public var pullRequest: RefFilter?
    public var schedules: [String] = []
    public var manualInputs: [ManualInput]?

    public init() {}
}

public struct ManualInput: Sendable, Equatable {
    public var name: String
    public var defaultValue: String?
    public var required: Bool
    public init(name: String, defaultValue: String?, required: Bool) {
        self.name = name
        self.defaultValue = defaultValue
        self.required = required
    }
}

/// Branch, tag and path filters of a trigger, glob patterns as in GitHub Actions.
public struct RefFilter: Sendable, Equatable {
    public var branches: [String] = []
    public var branchesIgnore: [String] = []
    public var tags: [String] = []
    public var paths: [String] = []
    public var pathsIgnore: [String] = []
    public init() {}
}

public struct Job: Sendable {
    public var id: String
    public var location: SourceLocation
    public var needs: [String] = []
    public var condition: Expression?
    public var runsOn: [String] = []
    public var steps: [Step] = []
    public var timeout: Duration?
    public var env: [EnvironmentVariable] = []
    public var continueOnError: Bool = false
    public var retry: RetryPolicy = .init()
    public var matrix: Matrix?
    public var maxParallel: Int?
    public var failFast: Bool = true
    public var outputs: [String] = []
    public var artifacts: [String] = []
    public var cache: CacheSpec?
    public var junitReports: [String] = []
    public var release: ReleaseSpec?
    public var deploy: DeploySpec?

    public init(id: String, location: SourceLocation) {
        self.id = id
        self.location = location
    }
}

public struct Step: Sendable {
    public var name: String?
    public var run: String
    public var location: SourceLocation
    public var env: [EnvironmentVariable] = []
    public var workingDirectory: String?
    public var timeout: Duration?
    public var continueOnError: Bool = false
    public var condition: Expression?
    /// A built-in step (`uses:`) instead of a command, with its `with:` inputs.
    public var uses: BuiltinStep?
    public var with: [EnvironmentVariable] = []

    public init(name: String?, run: String, location: SourceLocation) {
        self.name = name
        self.run = run
        self.location = location
    }

    /// The name shown in logs: the given name, or the first line of the command.
    public func displayName(index: Int) -> String {
        if let name, !name.isEmpty { return name }
        if let uses { return uses.rawValue }
        // Most commands are one short line: no split, no Character count.
        let oneLine = !run.isEmpty && !run.utf8.contains(UInt8(ascii: "\n"))
        let firstLine = oneLine ? run : run.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? "step \(index + 1)"
        return firstLine.utf8.count > 60 && firstLine.count > 60 ? String(firstLine.prefix(57)) + "..." : firstLine
    }
}

public struct RetryPolicy: Sendable, Equatable, Codable {
    public enum Condition: Sendable, Equatable, Codable, CustomStringConvertible {
        case timeout
        case exitCode(Int32)
        case any

        public var description: String {
            switch self {
            case .timeout: "timeout"
            case .exitCode(let code): "exit:\(code)"
            case .any: "any"
            }
        }
    }

    /// How many extra attempts after the first one.
    public var max: Int = 0
    public var on: [Condition] = [.any]
    /// How many times an attempt whose remote runner was lost is queued again (on top of `max`):
    /// losing a machine says nothing about the job. 0 fails the job at once instead.
    public var lost: Int = 2

    public init(max: Int = 0, on: [Condition] = [.any], lost: Int = 2) {
        self.max = max
        self.on = on
        self.lost = lost
    }

    /// Whether a failure of this kind may be retried.
    public func allows(_ failure: AttemptFailure) -> Bool {
        on.contains { condition in
            switch (condition, failure) {
            case (.any, _): true
            case (.timeout, .timeout): true
            case (.exitCode(let want), .exit(let got)): want == got
            default: false
            }
        }
    }
}

/// Why an attempt failed, for retry decisions and explanations.
public enum AttemptFailure: Sendable, Equatable, Codable, CustomStringConvertible {
    case exit(Int32)
    case timeout
    case signal(Int32)
    case error(String)
    /// The remote runner running the attempt died or was cut off.
    case runnerLost(String)

    public var description: String {
        switch self {
        case .exit(let code): "exit code \(code)"
        case .timeout: "timed out"
        case .signal(let signal): "killed by signal \(signal)"
        case .error(let message): message
        case .runnerLost(let reason): reason
        }
    }
}

public struct CacheSpec: Sendable, Equatable {
    public var inputs: [String]
    public init(inputs: [String]) { self.inputs = inputs }
}

/// `strategy.matrix`: named dimensions, plus `include` and `exclude` combinations.
public struct Matrix: Sendable, Equatable {
    public var dimensions: [(name: String, values: [String])]
    public var include: [[(String, String)]]
    public var exclude: [[(String, String)]]

    public init(dimensions: [(name: String, values: [String])], include: [[(String, String)]] = [], exclude: [[(String, String)]] = []) {
        self.dimensions = dimensions
        self.include = include
        self.exclude = exclude
    }

    public static func == (lhs: Matrix, rhs: Matrix) -> Bool {
        lhs.dimensions.elementsEqual(rhs.dimensions) { $0.name == $1.name && $0.values == $1.values }
            && lhs.include.elementsEqual(rhs.include) { $0.elementsEqual($1, by: ==) }
            && lhs.exclude.elementsEqual(rhs.exclude) { $0.elementsEqual($1, by: ==) }
    }
}

/// `release:` of a job: what to release, as which name and version (templates allowed).
public struct ReleaseSpec: Sendable, Equatable, Codable {
    public var name: String
    public var version: String
    public var path: String
    public var sbom: Bool

    public init(name: String, version: String, path: String, sbom: Bool = true) {
        self.name = name
        self.version = version
        self.path = path
        self.sbom = sbom
    }

    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.count <= 128,
              ("a"..."z").contains(first) || ("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }
    }

    public static func isValidVersion(_ version: String) -> Bool {
        guard let first = version.unicodeScalars.first, version.count <= 128, first != ".", first != "-" else { return false }
        return version.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-+".unicodeScalars.contains($0) }
    }
}

/// Steps built into Slipway, used with `uses:`.
public enum BuiltinStep: String, Sendable, Codable, CaseIterable {
    case secretScan = "slipway/secret-scan"
    case dependencyCheck = "slipway/dependency-check"
    case load = "slipway/load"

    public var inputs: [String] {
        switch self {
        case .secretScan: ["path", "allowlist"]
        case .dependencyCheck: ["advisories", "severity", "path"]
        case .load: ["url", "rps", "duration", "header", "max-error-percent", "timeout"]
        }
    }

    public var requiredInputs: [String] {
        switch self {
        case .secretScan: []
        case .dependencyCheck: ["advisories"]
        case .load: ["url"]
        }
    }

    public var requiredHint: String {
        switch self {
        case .secretScan: ""
        case .dependencyCheck: "point it at an OSV advisory file in the workspace, e.g. `with: { advisories: security/osv.json, severity: high }`"
        case .load: "name the URL to load, e.g. `with: { url: http://127.0.0.1:8080/, rps: 50, duration: 30s }`"
        }
    }
}

/// `concurrency: { group: "${{ branch }}", cancel-in-progress: true }`: runs of one group never overlap;
/// with `cancel-in-progress`, a newer run of the group cancels the one in progress and older queued ones.
public struct ConcurrencyPolicy: Sendable, Equatable {
    /// A template over `branch`, `event`, `tag` and `inputs`.
    public var group: String
    public var cancelInProgress: Bool

    public init(group: String, cancelInProgress: Bool = false) {
        self.group = group
        self.cancelInProgress = cancelInProgress
    }

    /// The group's name for a run of `event` on `branch`; nil when the template cannot be evaluated.
    public func groupName(event: String, branch: String?, tag: String? = nil, inputs: [String: String] = [:]) -> String? {
        let context = ExpressionContext(values: [
            "branch": branch.map { .string($0) } ?? .null,
            "tag": tag.map { .string($0) } ?? .null,
            "event": .string(event),
            "inputs": .object(inputs.mapValues { .string($0) }),
        ])
        return try? Template(parsing: group).render(in: context)
    }
}
