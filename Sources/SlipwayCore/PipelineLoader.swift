import Foundation
import Yams

/// Loads `slipway.yml`: YAML with source locations → a validated `Pipeline`, or every problem found at once.
public struct PipelineLoader {
    public struct Result: Sendable {
        public var pipeline: Pipeline?
        public var diagnostics: [Diagnostic]
        /// The file's text, when `load(contentsOf:)` could read it.
        public var text: String?
        public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
    }

    /// Files larger than this are refused before parsing.
    public static let maximumFileSize = 4 * 1024 * 1024
    static let maximumNodes = 2_000_000
    static let maximumFlowDepth = 64

    public static let topLevelKeys = ["name", "on", "env", "jobs", "concurrency", "environments"]
    public static let concurrencyKeys = ["group", "cancel-in-progress"]
    public static let jobKeys = ["name", "needs", "if", "runs-on", "steps", "timeout", "env", "continue-on-error", "retry",
                                 "strategy", "outputs", "artifacts", "cache", "reports", "release", "deploy"]
    public static let stepKeys = ["name", "id", "run", "env", "working-directory", "timeout", "continue-on-error", "if", "uses", "with"]
    public static let strategyKeys = ["matrix", "max-parallel", "fail-fast"]
    public static let retryKeys = ["max", "on", "lost"]
    public static let cacheKeys = ["inputs"]
    public static let releaseKeys = ["name", "version", "path", "sbom"]
    public static let reportKeys = ["junit"]
    public static let triggerKeys = ["push", "pull_request", "schedule", "manual"]
    public static let refFilterKeys = ["branches", "branches-ignore", "tags", "paths", "paths-ignore"]

    public static func load(text: String, file: String) -> Result {
        var loader = PipelineLoader(file: file, text: text)
        let pipeline = loader.run()
        let sorted = loader.diagnostics.sorted { ($0.location.line, $0.location.column) < ($1.location.line, $1.location.column) }
        return Result(pipeline: sorted.contains { $0.severity == .error } ? nil : pipeline, diagnostics: sorted)
    }

    public static func load(contentsOf url: URL, displayName: String? = nil) -> Result {
        let name = displayName ?? url.path
        let origin = SourceLocation(file: name, line: 1, column: 1)
        // A file handle gives the size without FileManager's attribute dictionary (~0.25 ms at start-up).
        guard let handle = try? FileHandle(forReadingFrom: url), let size = try? handle.seekToEnd(), (try? handle.seek(toOffset: 0)) != nil else {
            return Result(pipeline: nil, diagnostics: [Diagnostic(origin, "cannot read the pipeline file", hint: "check the path, or create one with `slipway init`")])
        }
        defer { try? handle.close() }
        if size > maximumFileSize {
            return Result(pipeline: nil, diagnostics: [Diagnostic(origin, "the file is \(size) bytes; pipeline files are limited to \(maximumFileSize) bytes", hint: "split the pipeline or remove generated content")])
        }
        guard let data = try? handle.readToEnd() ?? Data() else {
            return Result(pipeline: nil, diagnostics: [Diagnostic(origin, "cannot read the pipeline file", hint: "check its permissions")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            return Result(pipeline: nil, diagnostics: [Diagnostic(origin, "the file is not valid UTF-8", hint: "save it as UTF-8 text")])
        }
        var result = load(text: text, file: name)
        result.text = text
        return result
    }

    // MARK: - Implementation

    let file: String
    let text: String
    /// The file's lines: split only when a diagnostic needs them, which a valid file never does.
    var lines: [Substring] { sourceLines.lines }
    private let sourceLines: SourceLines
    var diagnostics: [Diagnostic] = []
    var visitedNodes = 0
    /// Each job's `needs` node, so graph errors can point at the offending entry.
    var needsNodes: [String: Node] = [:]
    /// Set while an environment with `traffic: haproxy` is parsed: its analyses get HAProxy's numbers.
    var analysisByHAProxy = false
    /// Environments with `traffic: haproxy` (parsed before jobs), for deploy jobs' own strategies.
    var haproxyEnvironments: Set<String> = []

    init(file: String, text: String) {
        self.file = file
        self.text = text
        self.sourceLines = SourceLines(text)
    }

    func location(_ node: Node?) -> SourceLocation {
        guard let mark = node?.mark else { return SourceLocation(file: file, line: 1, column: 1) }
        return SourceLocation(file: file, line: max(1, mark.line), column: max(1, mark.column))
    }

    mutating func error(_ node: Node?, _ message: String, hint: String? = nil) {
        diagnostics.append(Diagnostic(location(node), message, hint: hint))
    }

    mutating func error(at location: SourceLocation, _ message: String, hint: String? = nil) {
        diagnostics.append(Diagnostic(location, message, hint: hint))
    }

    mutating func run() -> Pipeline? {
        let origin = SourceLocation(file: file, line: 1, column: 1)
        if text.utf8.count > Self.maximumFileSize {
            error(at: origin, "the file is larger than \(Self.maximumFileSize) bytes", hint: "split the pipeline or remove generated content")
            return nil
        }
        if let deep = deepFlowNesting() {
            error(at: deep, "collections nest more than \(Self.maximumFlowDepth) levels deep", hint: "flatten the structure; a pipeline file never needs this depth")
            return nil
        }
        var root: Node?
        var nodes: Int?
        // Yams stops at the first duplicate key. To still report every other problem at once, rename the
        // duplicate in place (same length, private-use characters, so every position stays the same),
        // record it, and parse again; diagnostics about the renamed keys are dropped at the end.
        var working = text
        var renamed = 0
        while true {
            do {
                // The loader reads scalars itself, so Yams need not resolve their tags: the default
                // resolver runs seven regular expressions per scalar (a fifth of loading a 1000-job file).
                if case .composed(let node, let count) = YAMLComposer.compose(working) {
                    (root, nodes) = (node, count)
                } else {
                    root = try Yams.compose(yaml: working, .basic)
                }
                break
            } catch let yamlError as YamlError {
                let workingLines = working.split(separator: "\n", omittingEmptySubsequences: false)
                if case .duplicatedKeysInMapping(let duplicates, let context) = yamlError, renamed < 50,
                   let key = duplicates.first, !key.isEmpty,
                   let second = secondOccurrence(ofKey: key, after: context.mark.line, column: context.mark.column, in: workingLines) {
                    diagnostics.append(Diagnostic(second, "duplicate key '\(key)' (first defined at line \(context.mark.line))", hint: "each key, such as a job name, may appear only once in a mapping; rename or merge them"))
                    working = Self.renameKey(in: workingLines, at: second, length: key.count, marker: renamed)
                    renamed += 1
                    continue
                }
                diagnostics.append(diagnostic(for: yamlError))
                return nil
            } catch {
                self.error(at: origin, "cannot parse YAML: \(error)")
                return nil
            }
        }
        defer {
            if renamed > 0 {
                diagnostics.removeAll { $0.message.unicodeScalars.contains { Self.isRenameMarker($0) } }
            }
        }
        guard let root else {
            error(at: origin, "the file is empty", hint: "add `jobs:` with at least one job; `slipway init` writes a starter file")
            return nil
        }
        if isNull(root) {
            error(at: origin, "the file is empty", hint: "add `jobs:` with at least one job; `slipway init` writes a starter file")
            return nil
        }
        guard nodes.map({ $0 <= Self.maximumNodes }) ?? countNodes(root) else {
            error(at: origin, "the document expands to more than \(Self.maximumNodes) YAML nodes", hint: "remove anchors/aliases that repeat large blocks")
            return nil
        }
        guard let top = mapping(root, "the top level of the file") else { return nil }
        checkKeys(top, allowed: Self.topLevelKeys, context: "the top level")

        var pipeline = Pipeline(name: "", file: file)
        if let nameNode = top["name"] {
            pipeline.name = scalarString(nameNode, "`name`") ?? ""
        }
        if let envNode = top["env"] { pipeline.env = environment(envNode, context: "top-level `env`") }
        if let onNode = top["on"] { pipeline.triggers = triggers(onNode) }
        if let concurrency = top["concurrency"] { pipeline.concurrency = concurrencyPolicy(concurrency) }
        if let environments = top["environments"] { pipeline.environments = self.environments(environments) }
        guard let jobsNode = top["jobs"] else {
            error(root, "the pipeline has no `jobs`", hint: "add `jobs:` with at least one job, e.g. `jobs: { build: { steps: [ { run: make } ] } }`")
            return pipeline
        }
        guard let jobsMap = mapping(jobsNode, "`jobs`") else { return pipeline }
        if jobsMap.count == 0 {
            error(jobsNode, "`jobs` is empty", hint: "add at least one job with `steps`")
        }
        for (keyNode, jobNode) in jobsMap {
            guard let id = keyNode.scalar?.string else {
                error(keyNode, "a job name must be a plain string")
                continue
            }
            if !Self.isValidIdentifier(id) {
                error(keyNode, "invalid job name '\(id)'", hint: "use letters, digits, '-' and '_', starting with a letter or '_'")
            }
            if let job = job(id: id, keyNode: keyNode, node: jobNode) { pipeline.jobs.append(job) }
        }
        checkGraph(pipeline)
        return pipeline
    }

    static func isValidIdentifier(_ id: String) -> Bool {
        // ASCII ids (nearly all) are checked by bytes; CharacterSet lookups cost a bridge per scalar.
        if id.utf8.count <= 100, let first = id.utf8.first, id.utf8.allSatisfy({ $0 < 0x80 }) {
            func letter(_ byte: UInt8) -> Bool { (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") }
            guard first == UInt8(ascii: "_") || letter(first) else { return false }
            return id.utf8.allSatisfy { letter($0) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
        }
        guard let first = id.unicodeScalars.first, first == "_" || CharacterSet.letters.contains(first) else { return false }
        return id.unicodeScalars.allSatisfy { $0 == "_" || $0 == "-" || CharacterSet.alphanumerics.contains($0) } && id.count <= 100
    }

    // MARK: Jobs

    mutating func job(id: String, keyNode: Node, node: Node) -> Job? {
        var job = Job(id: id, location: location(keyNode))
        guard let map = mapping(node, "job '\(id)'") else { return nil }
        checkKeys(map, allowed: Self.jobKeys, context: "job '\(id)'")
        if let needs = map["needs"] {
            job.needs = stringList(needs, "`needs` of job '\(id)'", allowScalar: true)
            needsNodes[id] = needs
            var seen = Set<String>()
            for (index, need) in job.needs.enumerated() where !seen.insert(need).inserted {
                error(needs.sequence?[index] ?? needs, "job '\(id)' lists '\(need)' in `needs` twice", hint: "remove the duplicate")
            }
        }
        if let cond = map["if"] { job.condition = condition(cond, context: "`if` of job '\(id)'") }
        if let runsOn = map["runs-on"] { job.runsOn = stringList(runsOn, "`runs-on`", allowScalar: true) }
        if let timeout = map["timeout"] { job.timeout = duration(timeout, "`timeout` of job '\(id)'") }
        if let env = map["env"] { job.env = environment(env, context: "`env` of job '\(id)'") }
        if let coe = map["continue-on-error"] { job.continueOnError = bool(coe, "`continue-on-error`") ?? false }
        if let retry = map["retry"] { job.retry = retryPolicy(retry) }
        if let strategy = map["strategy"] { parseStrategy(strategy, into: &job) }
        if let outputs = map["outputs"] {
            job.outputs = stringList(outputs, "`outputs`", allowScalar: false)
            for (index, name) in job.outputs.enumerated() where !Self.isValidIdentifier(name) {
                error(outputs.sequence?[index] ?? outputs, "invalid output name '\(name)'", hint: "use letters, digits, '-' and '_'")
            }
        }
        if let artifacts = map["artifacts"] {
            job.artifacts = stringList(artifacts, "`artifacts`", allowScalar: true)
            for (index, path) in job.artifacts.enumerated() where path.hasPrefix("/") || path.split(separator: "/").contains("..") {
                error(artifacts.sequence?[index] ?? artifacts, "artifact path '\(path)' leaves the workspace", hint: "use a path relative to the workspace, without '..'")
            }
        }
        if let cache = map["cache"] {
            if let cacheMap = mapping(cache, "`cache`") {
                checkKeys(cacheMap, allowed: Self.cacheKeys, context: "`cache`")
                if let inputs = cacheMap["inputs"] {
                    job.cache = CacheSpec(inputs: stringList(inputs, "`cache.inputs`", allowScalar: true))
                } else {
                    error(cache, "`cache` needs `inputs`", hint: "list the files the job reads, e.g. `cache: { inputs: [\"src/**\"] }`")
                }
            }
        }
        if let reports = map["reports"], let reportMap = mapping(reports, "`reports`") {
            checkKeys(reportMap, allowed: Self.reportKeys, context: "`reports`")
            if let junit = reportMap["junit"] { job.junitReports = stringList(junit, "`reports.junit`", allowScalar: true) }
        }
        if let node = map["deploy"] { job.deploy = deploySpec(node, jobID: id) }
        if let node = map["release"] { job.release = releaseSpec(node, jobID: id) }
        if let steps = map["steps"] {
            if let sequence = steps.sequence {
                if sequence.count == 0 {
                    error(steps, "job '\(id)' has an empty `steps` list", hint: "add at least one step, e.g. `- run: make`")
                }
                for (index, stepNode) in sequence.enumerated() {
                    if let step = step(stepNode, index: index, jobID: id) { job.steps.append(step) }
                }
            } else {
                error(steps, "`steps` of job '\(id)' must be a list", hint: "write each step as `- run: command`")
            }
        } else if map["release"] == nil, map["deploy"] == nil {
            error(keyNode, "job '\(id)' has no `steps`", hint: "add `steps:` with at least one `- run: command`")
        }
        return job
    }

    mutating func step(_ node: Node, index: Int, jobID: String) -> Step? {
        let context = "step \(index + 1) of job '\(jobID)'"
        if let scalar = node.scalar {
            // Shorthand: a bare string is a command.
            checkTemplate(node, scalar.string, context: context)
            return Step(name: nil, run: scalar.string, location: location(node))
        }
        guard let map = mapping(node, context) else { return nil }
        checkKeys(map, allowed: Self.stepKeys, context: context)
        if let usesNode = map["uses"] {
            if map["run"] != nil {
                error(usesNode, "\(context) has both `uses` and `run`", hint: "a step either runs a command or uses a built-in step; split it in two")
                return nil
            }
            guard let uses = scalarString(usesNode, "`uses`") else { return nil }
            guard let builtin = BuiltinStep(rawValue: uses) else {
                let suggestion = Suggestion.nearest(to: uses, in: BuiltinStep.allCases.map(\.rawValue))
                error(usesNode, "unknown built-in step '\(uses)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "built-in steps: \(BuiltinStep.allCases.map(\.rawValue).joined(separator: ", "))")
                return nil
            }
            var step = Step(name: nil, run: "", location: location(node))
            step.uses = builtin
            if let name = map["name"] { step.name = scalarString(name, "`name`") }
            if let withNode = map["with"], let withMap = mapping(withNode, "`with`") {
                checkKeys(withMap, allowed: builtin.inputs, context: "`with` of \(uses)")
                for (k, v) in withMap {
                    guard let key = k.scalar?.string, let value = scalarString(v, "`with.\(k.scalar?.string ?? "?")`") else { continue }
                    checkTemplate(v, value, context: "`with.\(key)`")
                    step.with.append(EnvironmentVariable(name: key, value: value))
                }
            }
            for required in builtin.requiredInputs where !step.with.contains(where: { $0.name == required }) {
                error(usesNode, "\(uses) needs `with: { \(required): ... }`", hint: builtin.requiredHint)
            }
            if let cond = map["if"] { step.condition = condition(cond, context: "`if` of \(context)") }
            if let coe = map["continue-on-error"] { step.continueOnError = bool(coe, "`continue-on-error`") ?? false }
            if let timeout = map["timeout"] { step.timeout = duration(timeout, "`timeout` of \(context)") }
            return step
        }
        if let withNode = map["with"] {
            error(withNode, "`with` only goes with `uses`", hint: "pass values to a command with `env`")
        }
        guard let runNode = map["run"] else {
            error(node, "\(context) has no `run`", hint: "add `run: <command>` or `uses: slipway/secret-scan`")
            return nil
        }
        guard let run = scalarString(runNode, "`run` of \(context)") else { return nil }
        if run.unicodeScalars.allSatisfy(\.properties.isWhitespace) {
            error(runNode, "`run` of \(context) is empty", hint: "give the command to run")
        }
        checkTemplate(runNode, run, context: "`run`")
        var step = Step(name: nil, run: run, location: location(node))
        if let name = map["name"] {
            step.name = scalarString(name, "`name`")
            if let stepName = step.name { checkTemplate(name, stepName, context: "`name`") }
        }
        if let env = map["env"] { step.env = environment(env, context: "`env` of \(context)") }
        if let wd = map["working-directory"], let dir = scalarString(wd, "`working-directory`") {
            if dir.hasPrefix("/") || dir.split(separator: "/").contains("..") {
                error(wd, "`working-directory` '\(dir)' leaves the workspace", hint: "use a path relative to the workspace")
            } else {
                step.workingDirectory = dir
            }
        }
        if let timeout = map["timeout"] { step.timeout = duration(timeout, "`timeout` of \(context)") }
        if let coe = map["continue-on-error"] { step.continueOnError = bool(coe, "`continue-on-error`") ?? false }
        if let cond = map["if"] { step.condition = condition(cond, context: "`if` of \(context)") }
        return step
    }

    mutating func releaseSpec(_ node: Node, jobID: String) -> ReleaseSpec? {
        guard let map = mapping(node, "`release` of job '\(jobID)'") else { return nil }
        checkKeys(map, allowed: Self.releaseKeys, context: "`release`")
        var values: [String: String] = [:]
        for key in ["name", "version", "path"] {
            guard let valueNode = map[key] else {
                error(node, "`release` of job '\(jobID)' needs `\(key)`", hint: "write `release: { name: my-app, version: \"1.2.3\", path: dist/ }`")
                continue
            }
            guard let value = scalarString(valueNode, "`release.\(key)`") else { continue }
            checkTemplate(valueNode, value, context: "`release.\(key)`")
            if !Template.mayHoldExpressions(value) {
                if key == "name", !ReleaseSpec.isValidName(value) {
                    error(valueNode, "invalid release name '\(value)'", hint: "use lowercase letters, digits, '.', '-' and '_', starting with a letter or digit")
                }
                if key == "version", !ReleaseSpec.isValidVersion(value) {
                    error(valueNode, "invalid release version '\(value)'", hint: "use letters, digits, '.', '-', '+' and '_' (e.g. 1.2.3 or 1.2.3+abc)")
                }
                if key == "path", value.hasPrefix("/") || value.split(separator: "/").contains("..") {
                    error(valueNode, "release path '\(value)' leaves the workspace", hint: "use a path relative to the workspace")
                }
            }
            values[key] = value
        }
        var sbom = true
        if let sbomNode = map["sbom"] { sbom = bool(sbomNode, "`release.sbom`") ?? true }
        guard let name = values["name"], let version = values["version"], let path = values["path"] else { return nil }
        return ReleaseSpec(name: name, version: version, path: path, sbom: sbom)
    }

    mutating func parseStrategy(_ node: Node, into job: inout Job) {
        guard let map = mapping(node, "`strategy`") else { return }
        checkKeys(map, allowed: Self.strategyKeys, context: "`strategy`")
        if let maxParallel = map["max-parallel"] {
            if let value = integer(maxParallel, "`max-parallel`") {
                if value < 1 { error(maxParallel, "`max-parallel` must be at least 1", hint: "remove it for no limit") } else { job.maxParallel = value }
            }
        }
        if let failFast = map["fail-fast"] { job.failFast = bool(failFast, "`fail-fast`") ?? true }
        guard let matrixNode = map["matrix"], let matrixMap = mapping(matrixNode, "`matrix`") else { return }
        var dimensions: [(name: String, values: [String])] = []
        var include: [[(String, String)]] = []
        var exclude: [[(String, String)]] = []
        for (keyNode, valueNode) in matrixMap {
            guard let key = keyNode.scalar?.string else { error(keyNode, "matrix keys must be strings"); continue }
            switch key {
            case "include", "exclude":
                guard let sequence = valueNode.sequence else {
                    error(valueNode, "`matrix.\(key)` must be a list of mappings", hint: "write `\(key): [ { os: linux, shard: 1 } ]`")
                    continue
                }
                for entry in sequence {
                    guard let entryMap = mapping(entry, "an entry of `matrix.\(key)`") else { continue }
                    var combination: [(String, String)] = []
                    for (k, v) in entryMap {
                        guard let name = k.scalar?.string, let value = scalarString(v, "a matrix value") else { continue }
                        checkTemplate(v, value, context: "a matrix value")
                        combination.append((name, value))
                    }
                    if key == "include" { include.append(combination) } else { exclude.append(combination) }
                }
            default:
                if !Self.isValidIdentifier(key) { error(keyNode, "invalid matrix dimension '\(key)'", hint: "use letters, digits, '-' and '_'") }
                let values = stringList(valueNode, "matrix dimension '\(key)'", allowScalar: false)
                if values.isEmpty, valueNode.sequence != nil {
                    error(valueNode, "matrix dimension '\(key)' has no values", hint: "list at least one value")
                }
                if let sequence = valueNode.sequence {
                    for (index, value) in values.enumerated() where index < sequence.count { checkTemplate(sequence[index], value, context: "a matrix value") }
                }
                dimensions.append((key, values))
            }
        }
        if dimensions.isEmpty, include.isEmpty {
            error(matrixNode, "`matrix` defines no dimensions", hint: "add a dimension such as `shard: [1, 2, 3]`")
        }
        let matrix = Matrix(dimensions: dimensions, include: include, exclude: exclude)
        let count = MatrixExpansion.combinationCount(matrix)
        if count > MatrixExpansion.maximumCombinations {
            error(matrixNode, "the matrix expands to \(count) jobs; the limit is \(MatrixExpansion.maximumCombinations)", hint: "reduce the dimensions or use `exclude`")
            return
        }
        job.matrix = matrix
    }

    mutating func concurrencyPolicy(_ node: Node) -> ConcurrencyPolicy? {
        let hint = "write `concurrency: { group: \"${{ branch }}\", cancel-in-progress: true }`"
        if let scalar = node.scalar {
            checkTemplate(node, scalar.string, context: "`concurrency`")
            if scalar.string.isEmpty { error(node, "`concurrency` needs a group name", hint: hint) }
            return ConcurrencyPolicy(group: scalar.string)
        }
        guard let map = node.keyedMapping else {
            error(node, "`concurrency` must be a mapping or a group name", hint: hint)
            return nil
        }
        checkKeys(map, allowed: Self.concurrencyKeys, context: "`concurrency`")
        guard let groupNode = map["group"], let group = scalarString(groupNode, "`concurrency.group`"), !group.isEmpty else {
            error(node, "`concurrency` needs a `group`", hint: hint)
            return nil
        }
        checkTemplate(groupNode, group, context: "`concurrency.group`")
        var policy = ConcurrencyPolicy(group: group)
        if let cancel = map["cancel-in-progress"], let value = bool(cancel, "`concurrency.cancel-in-progress`") { policy.cancelInProgress = value }
        return policy
    }

    mutating func retryPolicy(_ node: Node) -> RetryPolicy {
        if node.scalar != nil {
            guard let max = integer(node, "`retry`") else { return .init() }
            if max < 0 || max > 10 { error(node, "`retry` must be between 0 and 10", hint: "retrying more than 10 times hides real failures") }
            return RetryPolicy(max: max, on: [.any])
        }
        guard let map = mapping(node, "`retry`") else { return .init() }
        checkKeys(map, allowed: Self.retryKeys, context: "`retry`")
        var policy = RetryPolicy()
        if let maxNode = map["max"], let max = integer(maxNode, "`retry.max`") {
            if max < 0 || max > 10 { error(maxNode, "`retry.max` must be between 0 and 10", hint: "retrying more than 10 times hides real failures") }
            policy.max = max
        } else if map["max"] == nil {
            error(node, "`retry` needs `max`", hint: "write `retry: { max: 2, on: [timeout] }`")
        }
        if let lostNode = map["lost"], let lost = integer(lostNode, "`retry.lost`") {
            if lost < 0 || lost > 10 { error(lostNode, "`retry.lost` must be between 0 and 10", hint: "it counts how often a job whose runner was lost is queued again") }
            policy.lost = lost
        }
        if let onNode = map["on"] {
            let items = stringList(onNode, "`retry.on`", allowScalar: true)
            var conditions: [RetryPolicy.Condition] = []
            for (index, item) in items.enumerated() {
                let itemNode = onNode.sequence?[index] ?? onNode
                if item == "timeout" { conditions.append(.timeout) }
                else if item == "any" { conditions.append(.any) }
                else if item.hasPrefix("exit:"), let code = Int32(item.dropFirst(5)), code >= 0, code < 256 { conditions.append(.exitCode(code)) }
                else {
                    let suggestion = Suggestion.nearest(to: item, in: ["timeout", "any"])
                    error(itemNode, "unknown retry condition '\(item)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use `timeout`, `any` or `exit:N` with N from 0 to 255")
                }
            }
            policy.on = conditions
        }
        return policy
    }

    // MARK: Triggers

    mutating func triggers(_ node: Node) -> Triggers {
        var result = Triggers()
        result.declared = true
        var map: [(Node, Node)] = []
        if let scalar = node.scalar {
            map = [(node, Node.scalar(.init("", .implicit, .plain, scalar.mark)))]
        } else if let sequence = node.sequence {
            map = sequence.map { ($0, Node.scalar(.init("", .implicit, .plain, $0.mark))) }
        } else if let mapping = node.mapping {
            map = Array(mapping)
        } else {
            error(node, "`on` must be an event name, a list or a mapping", hint: "write `on: { push: { branches: [main] } }`")
            return result
        }
        for (keyNode, valueNode) in map {
            guard let key = keyNode.scalar?.string else { error(keyNode, "trigger names must be strings"); continue }
            switch key {
            case "push": result.push = refFilter(valueNode, context: "`on.push`")
            case "pull_request": result.pullRequest = refFilter(valueNode, context: "`on.pull_request`")
            case "schedule":
                guard let sequence = valueNode.sequence else {
                    error(valueNode, "`on.schedule` must be a list", hint: "write `schedule: [ { cron: \"0 3 * * *\" } ]`")
                    continue
                }
                for entry in sequence {
                    guard let entryMap = mapping(entry, "a schedule entry") else { continue }
                    checkKeys(entryMap, allowed: ["cron"], context: "a schedule entry")
                    guard let cronNode = entryMap["cron"], let cron = scalarString(cronNode, "`cron`") else {
                        error(entry, "a schedule entry needs `cron`", hint: "write `- cron: \"0 3 * * *\"`")
                        continue
                    }
                    if case .failure(let problem) = CronSchedule.parse(cron) {
                        error(cronNode, problem.description, hint: "minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\"")
                    }
                    result.schedules.append(cron)
                }
            case "manual":
                var inputs: [ManualInput] = []
                if let manualMap = valueNode.keyedMapping {
                    checkKeys(manualMap, allowed: ["inputs"], context: "`on.manual`")
                    if let inputsNode = manualMap["inputs"], let inputsMap = mapping(inputsNode, "`on.manual.inputs`") {
                        for (nameNode, specNode) in inputsMap {
                            guard let name = nameNode.scalar?.string else { continue }
                            var input = ManualInput(name: name, defaultValue: nil, required: false)
                            if let spec = specNode.keyedMapping {
                                checkKeys(spec, allowed: ["default", "required", "description"], context: "input '\(name)'")
                                if let d = spec["default"] { input.defaultValue = scalarString(d, "`default`") }
                                if let r = spec["required"] { input.required = bool(r, "`required`") ?? false }
                            } else if !isNull(specNode) {
                                error(specNode, "input '\(name)' must be a mapping", hint: "write `\(name): { default: value }`")
                            }
                            inputs.append(input)
                        }
                    }
                } else if !isNull(valueNode) {
                    error(valueNode, "`on.manual` must be a mapping", hint: "write `manual: { inputs: { target: { default: staging } } }`")
                }
                result.manualInputs = inputs
            default:
                let suggestion = Suggestion.nearest(to: key, in: Self.triggerKeys)
                error(keyNode, "unknown trigger '\(key)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use one of: \(Self.triggerKeys.joined(separator: ", "))")
            }
        }
        return result
    }

    mutating func refFilter(_ node: Node, context: String) -> RefFilter {
        var filter = RefFilter()
        if isNull(node) { return filter }
        guard let map = mapping(node, context) else { return filter }
        checkKeys(map, allowed: Self.refFilterKeys, context: context)
        if let n = map["branches"] { filter.branches = stringList(n, "`branches`", allowScalar: true) }
        if let n = map["branches-ignore"] { filter.branchesIgnore = stringList(n, "`branches-ignore`", allowScalar: true) }
        if let n = map["tags"] { filter.tags = stringList(n, "`tags`", allowScalar: true) }
        if let n = map["paths"] { filter.paths = stringList(n, "`paths`", allowScalar: true) }
        if let n = map["paths-ignore"] { filter.pathsIgnore = stringList(n, "`paths-ignore`", allowScalar: true) }
        if !filter.branches.isEmpty, !filter.branchesIgnore.isEmpty {
            error(node, "\(context) has both `branches` and `branches-ignore`", hint: "use one of them; negate with '!pattern' inside `branches`")
        }
        return filter
    }

    // MARK: Graph checks

    mutating func checkGraph(_ pipeline: Pipeline) {
        let ids = Set(pipeline.jobs.map(\.id))
        var validEdges: [String: [String]] = [:]
        for job in pipeline.jobs {
            for need in job.needs {
                // The `needs` entry naming this job, or the job itself when it cannot be found.
                let needsNode = needsNodes[job.id]
                let entry = needsNode?.sequence?.first { $0.scalar?.string == need } ?? needsNode
                let at = entry.map { location($0) } ?? job.location
                if need == job.id {
                    error(at: at, "job '\(job.id)' needs itself", hint: "remove '\(need)' from its `needs`")
                } else if !ids.contains(need) {
                    let suggestion = Suggestion.nearest(to: need, in: ids)
                    error(at: at, "job '\(job.id)' needs unknown job '\(need)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "defined jobs: \(pipeline.jobs.map(\.id).joined(separator: ", "))")
                } else {
                    validEdges[job.id, default: []].append(need)
                }
            }
            // needs.J in expressions must refer to a job this one needs.
            var referenced = Set<String>()
            if let condition = job.condition { referenced.formUnion(condition.referencedNeeds) }
            for step in job.steps {
                referenced.formUnion(Self.needsReferenced(by: step.run))
                if let condition = step.condition { referenced.formUnion(condition.referencedNeeds) }
                for env in step.env { referenced.formUnion(Self.needsReferenced(by: env.value)) }
            }
            for env in job.env { referenced.formUnion(Self.needsReferenced(by: env.value)) }
            for name in referenced.sorted() where !job.needs.contains(name) {
                error(at: job.location, "job '\(job.id)' refers to `needs.\(name)` but does not list '\(name)' in `needs`", hint: "add '\(name)' to `needs` of job '\(job.id)'")
            }
        }
        let environmentNames = pipeline.environments.map(\.name)
        for job in pipeline.jobs {
            guard let deploy = job.deploy, !environmentNames.contains(deploy.environment) else { continue }
            let suggestion = Suggestion.nearest(to: deploy.environment, in: environmentNames)
            error(at: job.location, "job '\(job.id)' deploys to unknown environment '\(deploy.environment)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? (environmentNames.isEmpty ? "define it under `environments:`" : "environments: \(environmentNames.joined(separator: ", "))"))
        }
        if let cycle = DAG.findCycle(nodes: pipeline.jobs.map(\.id), edges: validEdges) {
            let location = pipeline.job(cycle[0])?.location ?? SourceLocation(file: file, line: 1, column: 1)
            error(at: location, "jobs form a cycle: \(cycle.joined(separator: " → ")) → \(cycle[0])", hint: "remove one of these `needs` so the jobs can run in order")
        }
    }

    static func needsReferenced(by text: String) -> Set<String> {
        guard Template.mayHoldExpressions(text), let template = try? Template(parsing: text) else { return [] }
        var names = Set<String>()
        for case .expression(let expression, _) in template.segments { names.formUnion(expression.referencedNeeds) }
        return names
    }

    // MARK: Typed accessors

    func isNull(_ node: Node) -> Bool {
        guard let scalar = node.scalar else { return false }
        return scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    mutating func mapping(_ node: Node, _ what: String) -> KeyedMapping? {
        if let map = node.mapping { return KeyedMapping(map) }
        error(node, "\(what) must be a mapping (key: value), found \(kind(node))", hint: "indent its keys under it, or use `{ key: value }`")
        return nil
    }

    func kind(_ node: Node) -> String {
        switch node {
        case .scalar(let s): isNull(node) ? "nothing" : "'\(s.string.prefix(40))'"
        case .sequence: "a list"
        case .mapping: "a mapping"
        case .alias: "an alias"
        }
    }

    mutating func scalarString(_ node: Node, _ what: String) -> String? {
        if let scalar = node.scalar { return scalar.string }
        error(node, "\(what) must be a string, found \(kind(node))", hint: "quote it if it contains ':' or starts with '{' or '['")
        return nil
    }

    mutating func stringList(_ node: Node, _ what: String, allowScalar: Bool) -> [String] {
        if let scalar = node.scalar, allowScalar, !isNull(node) { return [scalar.string] }
        guard let sequence = node.sequence else {
            error(node, "\(what) must be a list, found \(kind(node))", hint: "write `[a, b]` or one `- item` per line")
            return []
        }
        var result: [String] = []
        for item in sequence {
            if let scalar = item.scalar { result.append(scalar.string) } else { error(item, "items of \(what) must be strings, found \(kind(item))") }
        }
        return result
    }

    mutating func integer(_ node: Node, _ what: String) -> Int? {
        if let s = node.scalar?.string, let value = Int(s.trimmingCharacters(in: .whitespaces)) { return value }
        error(node, "\(what) must be a whole number, found \(kind(node))", hint: "write a number without quotes or units, e.g. 2")
        return nil
    }

    mutating func bool(_ node: Node, _ what: String) -> Bool? {
        switch node.scalar?.string.lowercased() {
        case "true"?: return true
        case "false"?: return false
        default:
            error(node, "\(what) must be true or false, found \(kind(node))", hint: "write `true` or `false`")
            return nil
        }
    }

    /// A positive duration (timeouts, intervals); `allowZero` for delays, where 0s means "none".
    mutating func duration(_ node: Node, _ what: String, allowZero: Bool = false) -> Duration? {
        guard let s = scalarString(node, what) else { return nil }
        guard let value = DurationParser.parse(s), value > .zero || (allowZero && value == .zero) else {
            error(node, "\(what): '\(s)' is not a duration", hint: "use a number with a unit: 500ms, 30s, 10m, 1h (or 1h30m)")
            return nil
        }
        if value > .seconds(7 * 24 * 3600) {
            error(node, "\(what) of '\(s)' is longer than 7 days", hint: "use a shorter timeout")
            return nil
        }
        return value
    }

    mutating func environment(_ node: Node, context: String) -> [EnvironmentVariable] {
        guard let map = mapping(node, context) else { return [] }
        var result: [EnvironmentVariable] = []
        for (keyNode, valueNode) in map {
            guard let name = keyNode.scalar?.string else { error(keyNode, "variable names must be strings"); continue }
            if name.isEmpty || name.contains("=") || name.unicodeScalars.contains(where: { $0.value == 0 || $0 == " " }) || name.first?.isNumber == true {
                error(keyNode, "invalid environment variable name '\(name)'", hint: "use letters, digits and '_', not starting with a digit")
                continue
            }
            if name.hasPrefix("SLIPWAY_") {
                error(keyNode, "'\(name)' is reserved: SLIPWAY_* variables are set by Slipway", hint: "choose another name")
                continue
            }
            guard let value = scalarString(valueNode, "the value of '\(name)'") else { continue }
            checkTemplate(valueNode, value, context: "the value of '\(name)'")
            result.append(EnvironmentVariable(name: name, value: value))
        }
        return result
    }

    mutating func condition(_ node: Node, context: String) -> Expression? {
        guard let raw = scalarString(node, context) else { return nil }
        var source = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if source.hasPrefix("${{"), source.hasSuffix("}}"), source.count >= 5 {
            source = String(source.dropFirst(3).dropLast(2))
        }
        if source.trimmingCharacters(in: .whitespaces).isEmpty {
            error(node, "\(context) is empty", hint: "write a condition such as `${{ branch == 'main' }}`")
            return nil
        }
        do {
            // Parse the text as written: `Expression` unwraps one `${{ }}` itself and rejects text around it
            // or a second `${{ }}`, with offsets into the raw text.
            _ = try Expression(parsing: raw)
        } catch {
            diagnostics.append(Diagnostic(locate(offset: error.offset, in: raw, node: node), "\(context): \(error.message)", hint: "expressions use `==`, `&&`, `||`, `!`, contexts like `branch`, and functions like `success()`"))
            return nil
        }
        return (try? Expression(parsing: source)) ?? (try? Expression(parsing: raw))
    }

    mutating func checkTemplate(_ node: Node, _ value: String, context: String) {
        guard Template.mayHoldExpressions(value) else { return }
        do {
            _ = try Template(parsing: value)
        } catch {
            diagnostics.append(Diagnostic(locate(offset: error.offset, in: value, node: node), "bad expression in \(context): \(error.message)", hint: "write expressions as `${{ matrix.shard }}`; close every `${{` with `}}`"))
        }
    }

    /// The file position of a character offset inside a scalar's value; follows the value into the source lines.
    func locate(offset: Int, in value: String, node: Node) -> SourceLocation {
        let base = location(node)
        let prefix = value.prefix(max(0, offset))
        let lineIndex = prefix.filter { $0 == "\n" }.count
        let valueLines = value.split(separator: "\n", omittingEmptySubsequences: false)
        let columnInLine = prefix.split(separator: "\n", omittingEmptySubsequences: false).last?.count ?? 0
        guard lineIndex < valueLines.count else { return base }
        let fragment = valueLines[lineIndex]
        // Search the source from the scalar's line for the line holding this fragment.
        var line = base.line - 1 + lineIndex
        while line < lines.count, line < base.line + lineIndex + 200 {
            let sourceLine = lines[line]
            if !fragment.isEmpty, let range = sourceLine.range(of: fragment) {
                let column = sourceLine.distance(from: sourceLine.startIndex, to: range.lowerBound) + columnInLine + 1
                return SourceLocation(file: file, line: line + 1, column: column)
            }
            line += 1
        }
        let quote = node.scalar.map { $0.style == .singleQuoted || $0.style == .doubleQuoted } ?? false
        return SourceLocation(file: file, line: base.line, column: base.column + (quote ? 1 : 0) + offset)
    }

    mutating func checkKeys(_ map: KeyedMapping, allowed: [String], context: String) {
        for (offset, name) in map.names.enumerated() {
            guard let name else {
                error(map.key(at: offset), "keys in \(context) must be strings")
                continue
            }
            if !allowed.contains(name) {
                let suggestion = Suggestion.nearest(to: name, in: allowed)
                error(map.key(at: offset), "unknown key '\(name)' in \(context)", hint: suggestion.map { "did you mean '\($0)'?" } ?? "allowed keys: \(allowed.joined(separator: ", "))")
            }
        }
    }

    // MARK: Guards against hostile input

    mutating func countNodes(_ node: Node) -> Bool {
        visitedNodes += 1
        if visitedNodes > Self.maximumNodes { return false }
        switch node {
        case .mapping(let map):
            for (k, v) in map { if !countNodes(k) || !countNodes(v) { return false } }
        case .sequence(let seq):
            for item in seq { if !countNodes(item) { return false } }
        default: break
        }
        return true
    }

    /// Flow collections (`[[[[`) nest without indentation, so libyaml's recursion could be driven deep; refuse early.
    func deepFlowNesting() -> SourceLocation? {
        var depth = 0, line = 1, column = 0
        var inSingle = false, inDouble = false, inComment = false
        var previous: UInt8 = 0x0A
        for byte in text.utf8 {
            column += 1
            if byte == 0x0A { line += 1; column = 0; inComment = false; inSingle = false; inDouble = false; previous = byte; continue }
            if inComment { continue }
            if inSingle { if byte == 0x27 { inSingle = false }; previous = byte; continue }
            if inDouble { if byte == 0x22 && previous != 0x5C { inDouble = false }; previous = byte; continue }
            switch byte {
            case 0x23 where previous == 0x20 || previous == 0x0A || previous == 0x09: inComment = true
            case 0x27: inSingle = true
            case 0x22: inDouble = true
            case 0x5B, 0x7B:
                depth += 1
                if depth > Self.maximumFlowDepth { return SourceLocation(file: file, line: line, column: column) }
            case 0x5D, 0x7D: depth = max(0, depth - 1)
            default: break
            }
            previous = byte
        }
        return nil
    }

    func diagnostic(for yamlError: YamlError) -> Diagnostic {
        let origin = SourceLocation(file: file, line: 1, column: 1)
        switch yamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _), .composer(let context, let problem, let mark, _):
            var message = "invalid YAML: \(problem)"
            if let context { message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))" }
            // An unterminated quote or flow collection runs to the end of the file; its start is the useful position.
            let at = problem.contains("end of stream") ? (context?.mark ?? mark) : mark
            var hint = yamlHint(problem + " " + (context?.text ?? ""))
            let indentation = at.line >= 1 && at.line <= lines.count ? lines[at.line - 1].prefix { $0 == " " || $0 == "\t" } : ""
            if indentation.contains("\t"), at.column <= indentation.count + 1 {
                hint = "indent with spaces, not tabs"
            }
            return Diagnostic(SourceLocation(file: file, line: max(1, at.line), column: max(1, at.column)), message, hint: hint)
        case .reader(let problem, _, _, _):
            return Diagnostic(origin, "invalid input: \(problem)", hint: "save the file as UTF-8 text without control characters")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let key = duplicates.first ?? "?"
            let first = context.mark
            let second = secondOccurrence(ofKey: key, after: first.line, column: first.column) ?? SourceLocation(file: file, line: max(1, first.line), column: max(1, first.column))
            return Diagnostic(second, "duplicate key '\(key)' (first defined at line \(first.line))", hint: "each key, such as a job name, may appear only once in a mapping; rename or merge them")
        default:
            return Diagnostic(origin, "cannot parse YAML: \(yamlError)")
        }
    }

    func yamlHint(_ problem: String) -> String {
        if problem.contains("tab") { return "indent with spaces, not tabs" }
        if problem.contains("mapping values are not allowed") { return "quote values that contain ': ' (e.g. run: \"echo a: b\")" }
        if problem.contains("did not find expected key") || problem.contains("block end") { return "check the indentation of this line against the lines above" }
        if problem.contains("quoted scalar") { return "close the quote" }
        return "check the YAML syntax near this position"
    }

    static func isRenameMarker(_ scalar: Unicode.Scalar) -> Bool { (0xE000...0xE0FF).contains(scalar.value) }

    /// Replaces the key at `location` by as many private-use characters as it has characters.
    static func renameKey(in lines: [Substring], at location: SourceLocation, length: Int, marker: Int) -> String {
        var result = lines.map(String.init)
        let index = location.line - 1
        guard index >= 0, index < result.count else { return result.joined(separator: "\n") }
        var characters = Array(result[index])
        var start = location.column - 1
        if start < characters.count, characters[start] == "\"" || characters[start] == "'" { start += 1 }
        let replacement = Character(Unicode.Scalar(0xE000 + UInt32(marker % 256))!)
        for offset in 0..<length where start + offset < characters.count { characters[start + offset] = replacement }
        result[index] = String(characters)
        return result.joined(separator: "\n")
    }

    func secondOccurrence(ofKey key: String, after line: Int, column: Int = 0) -> SourceLocation? {
        secondOccurrence(ofKey: key, after: line, column: column, in: lines)
    }

    func secondOccurrence(ofKey key: String, after line: Int, column: Int = 0, in lines: [Substring]) -> SourceLocation? {
        let firstIndex = max(0, line - 1)
        guard firstIndex < lines.count else { return nil }
        let firstLine = lines[firstIndex]
        let indent = column > 0 ? column - 1 : firstLine.prefix { $0 == " " }.count
        var index = firstIndex + 1
        while index < lines.count {
            let candidate = lines[index]
            let candidateIndent = candidate.prefix { $0 == " " }.count
            let rest = candidate.dropFirst(candidateIndent)
            if candidateIndent == indent, rest.hasPrefix(key + ":") || rest.hasPrefix("\"\(key)\":") || rest.hasPrefix("'\(key)':") {
                return SourceLocation(file: file, line: index + 1, column: indent + 1)
            }
            index += 1
        }
        return nil
    }
}

/// A file's lines, split on first use and shared by the loader's copies.
final class SourceLines {
    let text: String
    lazy var lines: [Substring] = text.split(separator: "\n", omittingEmptySubsequences: false)
    init(_ text: String) { self.text = text }
}

/// A mapping node with its keys indexed by name. The loader looks each key of a job or step up by name, and
/// Yams' own subscript builds a node and scans the whole mapping for every lookup (a third of the time to
/// load a 1000-job file).
struct KeyedMapping: RandomAccessCollection {
    let mapping: Node.Mapping
    /// Each position's key as a string (nil for a key that is not a scalar), read once.
    let names: [String?]
    /// Positions, not nodes, by name (the first of a repeated one), for large mappings only: most of a
    /// pipeline's have a key or two, which a search in order finds sooner than a hash is computed.
    private let byName: [String: Node.Mapping.Index]?
    static let indexedFrom = 12

    init(_ mapping: Node.Mapping) {
        self.mapping = mapping
        var names: [String?] = []
        names.reserveCapacity(mapping.count)
        for key in mapping.keys { names.append(key.scalar?.string) }
        self.names = names
        guard names.count >= Self.indexedFrom else {
            byName = nil
            return
        }
        var byName: [String: Node.Mapping.Index] = [:]
        byName.reserveCapacity(names.count)
        for (offset, name) in names.enumerated() {
            if let name, byName[name] == nil { byName[name] = mapping.index(mapping.startIndex, offsetBy: offset) }
        }
        self.byName = byName
    }

    subscript(name: String) -> Node? {
        if let byName { return byName[name].map { mapping[$0].value } }
        guard let offset = names.firstIndex(where: { $0 == name }) else { return nil }
        return mapping[mapping.index(mapping.startIndex, offsetBy: offset)].value
    }
    /// The key node at `offset` of `names`.
    func key(at offset: Int) -> Node { mapping[mapping.index(mapping.startIndex, offsetBy: offset)].key }
    subscript(position: Node.Mapping.Index) -> Node.Mapping.Element { mapping[position] }
    var startIndex: Node.Mapping.Index { mapping.startIndex }
    var endIndex: Node.Mapping.Index { mapping.endIndex }
    var keys: LazyMapCollection<Node.Mapping, Node> { mapping.keys }
    var values: LazyMapCollection<Node.Mapping, Node> { mapping.values }
}

extension Node {
    var keyedMapping: KeyedMapping? { mapping.map(KeyedMapping.init) }
}
