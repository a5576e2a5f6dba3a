#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayDeploy
import SlipwayStore
import Synchronization

/// What deploy jobs need from the pipeline: its environments and each job's `deploy:`.
struct DeployContext: Sendable {
    var environments: [String: EnvironmentSpec]
    var specs: [String: DeploySpec]
    var agentExecutable: String
}

/// A step log shared with the rollout controller's output callback (written one line at a time, under a lock).
final class SharedLog: Sendable {
    private let log: Mutex<StepLog?>
    init(_ log: sending StepLog?) { self.log = Mutex(log) }
    func write(_ line: String) { log.withLock { $0?.write(line) } }
    func note(_ line: String) { log.withLock { $0?.note(line) } }
    func finish() { log.withLock { $0?.finish() } }
    var lastLine: String? { log.withLock { $0?.lastLine } }
}

extension JobExecutor {
    /// A deploy job's own step: verify the release (promotion gate), check the environment's protection, then
    /// roll it out and wait for the verdict. Returns the failure, if any.
    func deploy(environment name: String, _ a: AttemptContext, attemptID: Int64) async -> String? {
        let index = a.resolved.steps.count
        let stepName = "deploy to \(name)"
        let logPath = layout.log(a.run.number, job: a.instance.key, attempt: a.attempt, step: index)
        let log = SharedLog(try? StepLog(path: logPath, jobKey: a.instance.key, masker: masker, live: live))
        observer?.progress(.stepStarted(key: a.instance.key, index: index, name: stepName))
        var record = try? store.insertStep(StepRecord(attemptID: attemptID, index: index, name: stepName, logPath: logPath))
        let problem = await rollOut(environment: name, a, log: log)
        if let problem { log.note("slipway: \(problem)") }
        log.finish()
        record?.status = problem == nil ? .success : .failure
        record?.failure = problem
        record?.finishedAt = Date()
        if let record { try? store.updateStep(record) }
        observer?.progress(.stepFinished(key: a.instance.key, index: index, name: stepName, status: problem == nil ? .success : .failure, detail: problem ?? log.lastLine))
        return problem.map { masker.mask($0) }
    }

    private func rollOut(environment name: String, _ a: AttemptContext, log: SharedLog) async -> String? {
        guard let artifact = a.resolved.deployArtifact else {
            return "nothing to deploy to '\(name)': set `deploy: { artifact: NAME@VERSION }` or need a job with `release:`"
        }
        guard let at = artifact.lastIndex(of: "@"), let releases else { return "'\(artifact)' is not NAME@VERSION" }
        let verification = releases.verify(name: String(artifact[..<at]), version: String(artifact[artifact.index(after: at)...]))
        guard verification.passed, let release = verification.release else {
            return "refusing to deploy \(artifact) to '\(name)': \(verification.failure ?? "it did not verify")"
        }
        log.write("\(artifact) verified: sha256:\(release.digest.prefix(16))…, signature, provenance" + (release.sbomDigest == nil ? "" : ", SBOM"))
        guard let environment = deployments.environments[name] else { return "no environment '\(name)' in `environments:`" }
        guard let store = store as? any RolloutStore & ReleaseStore else { return "deployments need the SQLite state store" }
        let spec = deployments.specs[a.instance.jobID]
        if let problem = await protectionGate(environment, a, store: store, log: log) { return problem }
        var controller = RolloutController(store: store, dataDirectory: layout.root, agentExecutable: deployments.agentExecutable,
                                           environment: environment) { line in log.write(line) }
        let control = self.control
        let key = a.instance.key
        controller.isCancelled = { control.isCancelled(job: key) }
        do {
            let outcome = try await controller.deploy(release, strategy: spec?.strategy, reversible: spec?.reversible ?? true,
                                                      runID: a.run.id, job: a.instance.key)
            if outcome.succeeded { return nil }
            return "rollout #\(outcome.rollout.id) of \(artifact) to \(name) ended \(outcome.phase.rawValue): \(outcome.reason)"
        } catch {
            return "\(error)"
        }
    }

    /// `protection:` of the environment: allowed branches, then N approvals (`slipway approve RUN --as NAME`),
    /// waited for durably (they are rows in the database, so a resumed run sees the ones given before).
    func protectionGate(_ environment: EnvironmentSpec, _ a: AttemptContext, store: any RolloutStore, log: SharedLog) async -> String? {
        guard let protection = environment.protection else { return nil }
        if !protection.branches.isEmpty {
            let branch = a.run.branch ?? ""
            guard Glob.matchesList(protection.branches, branch) else {
                return "'\(environment.name)' only takes deploys from \(protection.branches.joined(separator: ", ")); this run is on '\(branch.isEmpty ? "no branch" : branch)'"
            }
        }
        let now = Int64(Date().timeIntervalSince1970)
        for freeze in protection.freezes {
            if let window = freeze.contains(unixSeconds: now) {
                let formatter = ISO8601DateFormatter()
                let until = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(window.end)))
                return "'\(environment.name)' is frozen until \(until) (freeze \"\(freeze.cron)\" for \(DurationParser.format(freeze.duration))); deploy after it ends"
            }
        }
        guard protection.approvals > 0 else { return nil }
        let requester = ProcessInfo.processInfo.environment["USER"]
        var announced = false
        while true {
            let approvals = (try? store.approvals(runID: a.run.id, job: a.instance.key)) ?? []
            let counted = approvals.filter { !protection.preventSelfReview || $0.approver != requester }
            if counted.count >= protection.approvals {
                log.write("approved by \(counted.map(\.approver).joined(separator: ", "))")
                return nil
            }
            if !announced {
                announced = true
                log.write("waiting for \(protection.approvals - counted.count) approval(s): slipway approve \(a.run.number) --as NAME"
                           + (protection.preventSelfReview ? " (not \(requester ?? "the requester"))" : ""))
            }
            if control.isCancelled(job: a.instance.key) { return "cancelled while waiting for approvals" }
            try? await Task.sleep(for: .milliseconds(300))
        }
    }
}
