import Foundation
import SlipwayCore
import SlipwayDeploy
import SlipwayStore

/// An environment as `slipway status` shows it — what the agent runs there and its latest rollout — for the
/// terminal, `--json` and the server's API alike.
public struct EnvironmentView: Sendable, Codable, Equatable {
    public var environment: String
    public var agent: EnvironmentStatus?
    public var rollout: RolloutView?

    /// Every environment the agent runs or a rollout went to (or just `environment`), sorted by name.
    public static func collect(environment: String?, running: [EnvironmentStatus], store: SQLRunStore) throws -> [EnvironmentView] {
        let rollouts = try store.rollouts(environment: environment, limit: 200)
        var names = Set(running.map(\.name)).union(rollouts.map(\.environment))
        if let environment { names = names.contains(environment) ? [environment] : [] }
        return names.sorted().map { name in
            EnvironmentView(environment: name, agent: running.first { $0.name == name },
                            rollout: rollouts.first { $0.environment == name }.map { RolloutView($0, events: (try? store.rolloutEvents(rolloutID: $0.id)) ?? []) })
        }
    }
}

/// A rollout with its state decoded and its events.
public struct RolloutView: Sendable, Codable, Equatable {
    public var id: Int64
    public var release: String
    public var stable: String?
    public var strategy: String
    public var phase: String
    public var finished: Bool
    public var outcome: String?
    public var weights: [String: Int]
    public var step: Int
    public var pausedUntil: Date?
    /// The process driving it, on the machine that holds the store.
    public var ownerPID: Int32?
    public var events: [Event]

    public struct Event: Sendable, Codable, Equatable {
        public var at: Date
        public var kind: String
        public var text: String
        public var measurement: SlipwayCore.Measurement?
    }

    public init(_ record: RolloutRecord, events: [RolloutEventRecord]) {
        let machine = try? JSONDecoder().decode(RolloutStateMachine.self, from: record.state)
        id = record.id
        release = record.reference
        stable = record.stable
        strategy = record.strategy
        phase = record.phase
        finished = machine?.phase.isFinal ?? (record.finishedAt != nil)
        outcome = record.outcome
        weights = machine?.weights ?? [:]
        step = (machine?.stepIndex ?? 0) + 1
        pausedUntil = machine?.pauseUntil.map(Date.init(timeIntervalSince1970:))
        ownerPID = record.ownerPID
        self.events = events.map { Event(at: $0.at, kind: $0.kind, text: $0.text, measurement: $0.detail.flatMap { try? JSONDecoder().decode(SlipwayCore.Measurement.self, from: $0) }) }
    }
}
