import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore
import Synchronization

/// Starts runs nobody pushed a webhook for: `on.schedule` cron entries (read from the pipeline file on the
/// repository's default branch) and branch pushes seen by polling (`git ls-remote`) for projects with a
/// poll interval. What it fired or saw is stored with the request it queues, in one transaction, so a
/// restart neither repeats nor loses a run. See `SchedulePolicy` for missed ticks.
public final class TriggerScheduler: Sendable {
    let store: ServerStore
    let layout: ServerLayout
    let wake: @Sendable () -> Void
    /// Wall-clock time (unix seconds) for cron; injected so tests choose the minute.
    let now: @Sendable () -> Int64
    private let state = Mutex<(lastPoll: [String: ContinuousClock.Instant], lastFetch: [String: ContinuousClock.Instant],
                               pipelines: [String: (commit: String, schedules: [String], branch: String?)])>(([:], [:], [:]))

    public init(store: ServerStore, layout: ServerLayout, now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) },
                wake: @escaping @Sendable () -> Void = {}) {
        self.store = store
        self.layout = layout
        self.now = now
        self.wake = wake
    }

    /// Ticks every second until cancelled.
    public func run(clock: some Clock<Duration> = ContinuousClock()) async {
        while !Task.isCancelled {
            // A tick runs git: off the concurrency pool.
            _ = try? await BlockingWork.run { self.tick() }
            try? await clock.sleep(for: .seconds(1))
        }
    }

    /// One pass over every project; returns how many requests it queued.
    @discardableResult
    public func tick() -> Int {
        var queued = 0
        for project in (try? store.projects()) ?? [] {
            if let seconds = project.pollSeconds, seconds > 0 {
                let due = state.withLock { state -> Bool in
                    if let last = state.lastPoll[project.name], ContinuousClock.now - last < .seconds(seconds) { return false }
                    state.lastPoll[project.name] = .now
                    return true
                }
                if due { queued += poll(project) }
            }
            queued += schedules(project)
        }
        if queued > 0 { wake() }
        return queued
    }

    /// New or moved branch heads become push requests; the first poll of a project only sets the baseline.
    func poll(_ project: ProjectRecord) -> Int {
        let output = Helper.run(["git", "ls-remote", "--heads", "--", project.repository], in: "/", environment: RepositoryMirror.environment)
        guard output.status == 0 else { return 0 }
        var heads: [String: String] = [:]
        for line in output.text.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, parts[0].count == 40 else { continue }
            heads[String(parts[1])] = String(parts[0])
        }
        guard let known = try? store.refStates(project: project.name) else { return 0 }
        var requests: [RunRequestRecord] = []
        if !known.isEmpty {
            for (ref, commit) in heads.sorted(by: { $0.key < $1.key }) where known[ref] != commit && ref.hasPrefix("refs/heads/") {
                requests.append(RunRequestRecord(project: project.name, event: "push", branch: String(ref.dropFirst(11)), commit: commit,
                                                 source: "poll:\(commit.prefix(12))", before: known[ref]))
            }
        }
        guard (try? store.recordPoll(project: project.name, refs: heads, requests: requests)) != nil else { return 0 }
        return requests.count
    }

    /// The `on.schedule` entries of the pipeline on the default branch. git is asked at most once a minute
    /// per project (fetching projects that have schedules, re-reading the file when the branch moved);
    /// the ticks in between only evaluate cron.
    func schedules(_ project: ProjectRecord) -> Int {
        let cached = state.withLock { $0.pipelines[project.name] }
        var entries = cached?.schedules ?? []
        // Projects with schedules are looked at every minute; the others every five, so a newly added
        // `on.schedule` is seen even when nothing else fetches the mirror.
        let interval: Duration = entries.isEmpty ? .seconds(300) : .seconds(60)
        let stale = state.withLock { $0.lastFetch[project.name].map { ContinuousClock.now - $0 >= interval } ?? true }
        var branch = cached?.branch
        if stale {
            state.withLock { $0.lastFetch[project.name] = .now }
            let mirror = RepositoryMirror(source: project.repository, path: layout.mirror(project.name))
            if cached != nil || !FileManager.default.fileExists(atPath: mirror.path + "/HEAD") { try? mirror.update() }
            guard let head = mirror.resolve("HEAD") else { return 0 }
            if cached?.commit != head {
                let shown = Helper.run(["git", "--git-dir", mirror.path, "show", "\(head):\(project.file)"], in: "/")
                let text = shown.status == 0 ? String(decoding: shown.stdout, as: UTF8.self) : ""
                entries = PipelineLoader.load(text: text, file: project.file).pipeline?.triggers.schedules ?? []
                let symbolic = Helper.run(["git", "--git-dir", mirror.path, "symbolic-ref", "--short", "HEAD"], in: "/")
                branch = symbolic.status == 0 ? symbolic.text : nil
            }
            state.withLock { [entries, branch] in $0.pipelines[project.name] = (head, entries, branch) }
        }
        guard !entries.isEmpty else { return 0 }
        let now = now()
        var queued = 0
        for entry in entries {
            guard case .success(let schedule) = CronSchedule.parse(entry) else { continue }
            // A failed read is not "never fired": that could fire a minute twice.
            let last: Int64?
            do { last = try store.lastScheduled(project: project.name, cron: entry) } catch { continue }
            switch SchedulePolicy.decide(schedule, lastFired: last, now: now) {
            case .fire(let minute):
                let request = RunRequestRecord(project: project.name, event: "schedule", branch: branch,
                                               source: "schedule:\(entry)@\(minute)")
                if (try? store.recordSchedule(project: project.name, cron: entry, minute: minute, request: request)) != nil { queued += 1 }
            case .baseline(let minute):
                try? store.recordSchedule(project: project.name, cron: entry, minute: minute, request: nil)
            case .wait:
                break
            }
        }
        return queued
    }
}
