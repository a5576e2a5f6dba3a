import Crypto
import Foundation

/// A job instance with every expression evaluated: exactly what will run. Its JSON is the
/// "definition" part of the cache key and what `explain` compares.
public struct ResolvedJob: Sendable, Codable, Equatable {
    public struct ResolvedStep: Sendable, Codable, Equatable {
        public var name: String
        public var run: String
        public var env: [String: String]
        public var workingDirectory: String?
        public var timeoutMilliseconds: Int64?
        public var continueOnError: Bool
        public var condition: String?
        public var uses: BuiltinStep?
        public var with: [String: String]?
    }

    public var key: String
    public var jobID: String
    public var matrix: [String: String]
    public var env: [String: String]
    public var steps: [ResolvedStep]
    public var timeoutMilliseconds: Int64?
    public var outputs: [String]
    public var artifacts: [String]
    public var cacheInputs: [String]?
    public var junitReports: [String]
    public var release: ReleaseSpec?
    /// The environment a `deploy:` job targets.
    public var deployEnvironment: String? = nil
    /// NAME@VERSION to deploy: `deploy.artifact`, or the `release` output of a needed job.
    public var deployArtifact: String? = nil

    /// Renders every template of `instance` in `context`. Job env sees pipeline env; step env sees both.
    public static func resolve(_ instance: JobInstance, in pipeline: Pipeline, context: ExpressionContext) throws(CoreError) -> ResolvedJob {
        guard let job = pipeline.job(instance.jobID) else { throw CoreError("unknown job '\(instance.jobID)'") }
        return try resolve(instance, job: job, in: pipeline, context: context)
    }

    /// The same, for a caller that has already found the instance's job (a run looks jobs up by id once,
    /// not through `Pipeline.job`'s scan for each of a thousand jobs).
    public static func resolve(_ instance: JobInstance, job: Job, in pipeline: Pipeline, context: ExpressionContext) throws(CoreError) -> ResolvedJob {
        var context = context
        var env: [String: String] = [:]
        // `env` as the expressions see it is built only when an expression is about to be rendered: a job
        // without any (most) never copies the context.
        var envPublished = false
        func render(_ text: String, _ what: String) throws(CoreError) -> String {
            guard Template.mayHoldExpressions(text) else { return text }
            if !envPublished {
                context.values["env"] = .object(env.mapValues { ExpressionValue.string($0) })
                envPublished = true
            }
            do {
                return try Template(parsing: text).render(in: context)
            } catch {
                throw CoreError("job '\(instance.key)': \(what): \(error.message)")
            }
        }
        for variable in pipeline.env {
            env[variable.name] = try render(variable.value, "env \(variable.name)")
            envPublished = false
        }
        for variable in job.env {
            env[variable.name] = try render(variable.value, "env \(variable.name)")
            envPublished = false
        }
        var steps: [ResolvedStep] = []
        for (index, step) in job.steps.enumerated() {
            var stepEnv: [String: String] = [:]
            for variable in step.env { stepEnv[variable.name] = try render(variable.value, "env \(variable.name)") }
            // Name the step after rendering: truncating first could cut an expression in half.
            let run = try render(step.run, "step \(index + 1)")
            var display = Step(name: try step.name.map { name throws(CoreError) in try render(name, "step name") }, run: run, location: step.location)
            display.name = display.name.flatMap { $0.isEmpty ? nil : $0 }
            display.uses = step.uses
            let name = display.displayName(index: index)
            var with: [String: String]?
            if step.uses != nil {
                var values: [String: String] = [:]
                for input in step.with { values[input.name] = try render(input.value, "with.\(input.name)") }
                with = values
            }
            steps.append(ResolvedStep(
                name: name,
                run: run,
                env: stepEnv,
                workingDirectory: step.workingDirectory,
                timeoutMilliseconds: step.timeout.map(Self.milliseconds),
                continueOnError: step.continueOnError,
                condition: step.condition?.source,
                uses: step.uses,
                with: with
            ))
        }
        return ResolvedJob(
            key: instance.key,
            jobID: job.id,
            matrix: Dictionary(instance.matrix?.entries.map { ($0.name, $0.value) } ?? [], uniquingKeysWith: { _, b in b }),
            env: env,
            steps: steps,
            timeoutMilliseconds: job.timeout.map(Self.milliseconds),
            outputs: job.outputs,
            artifacts: job.artifacts,
            cacheInputs: job.cache?.inputs,
            junitReports: job.junitReports,
            release: try job.release.map { spec throws(CoreError) in
                ReleaseSpec(name: try render(spec.name, "release.name"), version: try render(spec.version, "release.version"), path: try render(spec.path, "release.path"), sbom: spec.sbom)
            },
            deployEnvironment: job.deploy?.environment,
            deployArtifact: try job.deploy.flatMap { spec throws(CoreError) -> String? in
                if let artifact = spec.artifact { return try render(artifact, "deploy.artifact") }
                // By default, the release a needed job produced (its `release` output).
                guard case .object(let needs)? = context.values["needs"] else { return nil }
                for need in job.needs {
                    if case .object(let entry)? = needs[need], case .object(let outputs)? = entry["outputs"], case .string(let reference)? = outputs["release"] {
                        return reference
                    }
                }
                return nil
            }
        )
    }

    static func milliseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

/// The job cache key: SHA-256 over named components, so `explain` can say which one changed.
public struct CacheKey: Sendable, Equatable, Codable {
    /// Component name → hex digest, e.g. "definition", "file:src/main.c", "needs.build".
    public var components: [String: String]

    public init(components: [String: String]) { self.components = components }

    public var digest: String {
        var hasher = SHA256()
        for name in components.keys.sorted() {
            hasher.update(data: Data(name.utf8))
            hasher.update(data: Data([0]))
            hasher.update(data: Data(components[name]!.utf8))
            hasher.update(data: Data([0]))
        }
        return hasher.finalize().hexString
    }

    public static func hex(_ data: some DataProtocol) -> String {
        SHA256.hash(data: data).hexString
    }

    /// Builds the key from the resolved job, input file digests and each need's outputs and artifact digests.
    public static func make(job: ResolvedJob, inputFiles: [String: String], upstream: [String: String]) -> CacheKey {
        var components: [String: String] = ["definition": hex(job.canonicalJSON())]
        for (path, digest) in inputFiles { components["file:\(path)"] = digest }
        for (need, digest) in upstream { components["needs.\(need)"] = digest }
        return CacheKey(components: components)
    }

    /// Human-readable differences from an earlier key: what was added, removed or changed.
    public func differences(from previous: CacheKey) -> [String] {
        var changes: [String] = []
        for name in Set(components.keys).union(previous.components.keys).sorted() {
            switch (previous.components[name], components[name]) {
            case (nil, _?): changes.append("\(Self.describe(name)) is new")
            case (_?, nil): changes.append("\(Self.describe(name)) was removed")
            case (let a?, let b?) where a != b: changes.append("\(Self.describe(name)) changed")
            default: break
            }
        }
        return changes
    }

    static func describe(_ component: String) -> String {
        if component == "definition" { return "the job definition (commands, env, matrix values)" }
        if component.hasPrefix("file:") { return "input file '\(component.dropFirst(5))'" }
        if component.hasPrefix("needs.") { return "outputs/artifacts of needed job '\(component.dropFirst(6))'" }
        return component
    }
}
