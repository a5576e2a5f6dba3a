import Foundation
import SlipwayCore
import SlipwayStore

/// Progress of a run, for terminal views (and later the server's event stream).
public enum RunProgress: Sendable {
    case runStarted(run: RunRecord, jobs: [String], resumed: Bool)
    case jobStarted(key: String, attempt: Int, reason: String)
    case stepStarted(key: String, index: Int, name: String)
    case stepFinished(key: String, index: Int, name: String, status: WorkStatus, detail: String?)
    case jobFinished(key: String, result: JobResult, allowedFailure: Bool, reason: String, cacheHit: Bool, duration: Duration?)
    case runFinished(run: RunRecord, result: JobResult, duration: Duration)
}

public protocol RunObserver: Sendable {
    func progress(_ event: RunProgress)
    /// A turn's events at once, in order (the jobs that ended and those that start): a terminal writes them
    /// in one go.
    func progress(batch events: [RunProgress])
}

extension RunObserver {
    public func progress(batch events: [RunProgress]) {
        for event in events { progress(event) }
    }
}
