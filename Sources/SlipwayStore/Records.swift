import Foundation
import SlipwayCore

/// Lifecycle of a run as stored.
public enum RunStatus: String, Sendable, Codable {
    case running, success, failure, cancelled, interrupted
    public var isFinal: Bool { self != .running && self != .interrupted }
}

/// Status of a job instance, attempt or step as stored.
public enum WorkStatus: String, Sendable, Codable {
    case pending, running, success, failure, cancelled, skipped, interrupted
}

public struct RunRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var number: Int64
    public var pipelineName: String
    public var file: String
    /// The pipeline text as it was when the run started, so `--resume` runs the same definition.
    public var pipelineText: String
    public var event: String
    public var branch: String?
    public var commit: String?
    public var dirty: Bool
    public var status: RunStatus
    public var workspace: String
    /// JSON of the options the run was started with (targets, env overrides, parallelism, cache flag).
    public var options: String
    public var createdAt: Date
    public var finishedAt: Date?
    public var pid: Int32?

    public init(id: Int64 = 0, number: Int64 = 0, pipelineName: String, file: String, pipelineText: String, event: String, branch: String?, commit: String?, dirty: Bool, status: RunStatus = .running, workspace: String, options: String, createdAt: Date = Date(), finishedAt: Date? = nil, pid: Int32? = nil) {
        self.id = id
        self.number = number
        self.pipelineName = pipelineName
        self.file = file
        self.pipelineText = pipelineText
        self.event = event
        self.branch = branch
        self.commit = commit
        self.dirty = dirty
        self.status = status
        self.workspace = workspace
        self.options = options
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.pid = pid
    }
}

public struct JobRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var runID: Int64
    public var key: String
    public var jobID: String
    public var status: WorkStatus
    public var allowedFailure: Bool
    public var reason: String?
    public var attempts: Int
    /// JSON object of outputs.
    public var outputs: String
    public var cacheKey: String?
    public var cacheComponents: String?
    public var cacheHit: Bool
    /// The resolved definition (secrets masked).
    public var definition: String?
    public var startedAt: Date?
    public var finishedAt: Date?

    public init(id: Int64 = 0, runID: Int64, key: String, jobID: String, status: WorkStatus = .pending, allowedFailure: Bool = false, reason: String? = nil, attempts: Int = 0, outputs: String = "{}", cacheKey: String? = nil, cacheComponents: String? = nil, cacheHit: Bool = false, definition: String? = nil, startedAt: Date? = nil, finishedAt: Date? = nil) {
        self.id = id
        self.runID = runID
        self.key = key
        self.jobID = jobID
        self.status = status
        self.allowedFailure = allowedFailure
        self.reason = reason
        self.attempts = attempts
        self.outputs = outputs
        self.cacheKey = cacheKey
        self.cacheComponents = cacheComponents
        self.cacheHit = cacheHit
        self.definition = definition
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }

    public var outputValues: [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(outputs.utf8))) ?? [:]
    }
}

public struct AttemptRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var jobRowID: Int64
    public var number: Int
    public var status: WorkStatus
    public var failure: String?
    public var startedAt: Date
    public var finishedAt: Date?

    public init(id: Int64 = 0, jobRowID: Int64, number: Int, status: WorkStatus = .running, failure: String? = nil, startedAt: Date = Date(), finishedAt: Date? = nil) {
        self.id = id
        self.jobRowID = jobRowID
        self.number = number
        self.status = status
        self.failure = failure
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

public struct StepRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var attemptID: Int64
    public var index: Int
    public var name: String
    public var status: WorkStatus
    public var exitCode: Int32?
    public var failure: String?
    public var logPath: String
    /// Process group of the running step, so a resumed run can end what a killed one left behind.
    public var processGroup: Int32?
    public var startedAt: Date
    public var finishedAt: Date?

    public init(id: Int64 = 0, attemptID: Int64, index: Int, name: String, status: WorkStatus = .running, exitCode: Int32? = nil, failure: String? = nil, logPath: String, processGroup: Int32? = nil, startedAt: Date = Date(), finishedAt: Date? = nil) {
        self.id = id
        self.attemptID = attemptID
        self.index = index
        self.name = name
        self.status = status
        self.exitCode = exitCode
        self.failure = failure
        self.logPath = logPath
        self.processGroup = processGroup
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

public struct RunEventRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var runID: Int64
    public var at: Date
    public var jobKey: String?
    public var kind: String
    public var message: String

    public init(id: Int64 = 0, runID: Int64, at: Date = Date(), jobKey: String?, kind: String, message: String) {
        self.id = id
        self.runID = runID
        self.at = at
        self.jobKey = jobKey
        self.kind = kind
        self.message = message
    }
}

public struct CacheEntryRecord: Sendable, Codable, Equatable {
    public var key: String
    public var jobKey: String
    public var components: String
    public var outputs: String
    /// Directory holding the job's artifacts as they were saved.
    public var artifactsPath: String?
    public var artifactsDigest: String?
    public var runID: Int64
    public var createdAt: Date

    public init(key: String, jobKey: String, components: String, outputs: String, artifactsPath: String?, artifactsDigest: String?, runID: Int64, createdAt: Date = Date()) {
        self.key = key
        self.jobKey = jobKey
        self.components = components
        self.outputs = outputs
        self.artifactsPath = artifactsPath
        self.artifactsDigest = artifactsDigest
        self.runID = runID
        self.createdAt = createdAt
    }
}

public struct TestResultRecord: Sendable, Codable, Equatable {
    public var runID: Int64
    public var jobKey: String
    public var attempt: Int
    public var testID: String
    public var suite: String
    public var name: String
    public var status: String
    public var duration: Double
    public var message: String?
    public var file: String?
    public var line: Int?

    public init(runID: Int64, jobKey: String, attempt: Int, testID: String, suite: String, name: String, status: String, duration: Double, message: String?, file: String?, line: Int?) {
        self.runID = runID
        self.jobKey = jobKey
        self.attempt = attempt
        self.testID = testID
        self.suite = suite
        self.name = name
        self.status = status
        self.duration = duration
        self.message = message
        self.file = file
        self.line = line
    }
}

/// A test that failed and then passed in a later attempt of the same job in one run.
public struct FlakyTest: Sendable, Equatable {
    public var testID: String
    public var jobKey: String
    /// Runs (all time) in which this test was flaky.
    public var flakyRuns: Int
}
