import Foundation
import Synchronization

/// Per-version figures measured by the router itself.
public struct VersionMetrics: Sendable, Equatable, Codable {
    public var requests: Int
    /// 5xx responses + backend connect/IO failures (those get a 502).
    public var errors: Int
    /// Latency percentiles in milliseconds (time from request head received to response end written).
    public var p50: Double
    public var p90: Double
    public var p99: Double

    public init(requests: Int, errors: Int, p50: Double, p90: Double, p99: Double) {
        self.requests = requests
        self.errors = errors
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
    }
}

/// A latency histogram with fixed log-scale buckets from 0.05 ms to 60 s (50 buckets per decade, so a percentile is
/// within ±2.4 % of the true value), plus one underflow and one overflow bucket.
struct LatencyHistogram: Sendable, Equatable {
    static let minimum = 0.05
    static let maximum = 60_000.0
    static let bucketsPerDecade = 50.0
    /// Upper bounds of the regular buckets.
    static let upperBounds: [Double] = {
        let decades = (maximum / minimum).log10
        let count = Int((decades * bucketsPerDecade).rounded(.up))
        return (1...count).map { minimum * pow10($0, over: bucketsPerDecade) }
    }()

    /// counts[0]: < minimum; counts[i] (1...n): (bound[i-2], bound[i-1]]; counts[n+1]: > maximum.
    private(set) var counts: [Int] = Array(repeating: 0, count: LatencyHistogram.upperBounds.count + 2)
    private(set) var total = 0

    static func bucket(for milliseconds: Double) -> Int {
        guard milliseconds >= minimum else { return 0 }
        if milliseconds > maximum { return upperBounds.count + 1 }
        // index of the first bound >= value
        var index = Int(((milliseconds / minimum).log10 * bucketsPerDecade).rounded(.up))
        index = max(1, min(index, upperBounds.count))
        // correct floating-point edge effects
        while index > 1, upperBounds[index - 2] >= milliseconds { index -= 1 }
        while index < upperBounds.count, upperBounds[index - 1] < milliseconds { index += 1 }
        return index
    }

    mutating func record(_ milliseconds: Double) {
        self.counts[Self.bucket(for: milliseconds)] += 1
        self.total += 1
    }

    /// The value at quantile `q` (0...1): the geometric middle of the bucket holding it.
    func percentile(_ q: Double) -> Double {
        guard self.total > 0 else { return 0 }
        let rank = max(1, Int((q * Double(self.total)).rounded(.up)))
        var seen = 0
        for (index, count) in self.counts.enumerated() where count > 0 {
            seen += count
            if seen >= rank {
                return Self.representative(of: index)
            }
        }
        return Self.representative(of: self.counts.count - 1)
    }

    static func representative(of index: Int) -> Double {
        if index == 0 { return minimum }
        if index > upperBounds.count { return maximum }
        let upper = upperBounds[index - 1]
        let lower = index == 1 ? minimum : upperBounds[index - 2]
        return (lower * upper).squareRoot()
    }
}

/// One recorded response.
struct LatencySample: Sendable, Equatable {
    var at: ContinuousClock.Instant
    var milliseconds: Double
    var isError: Bool
    /// This version's request and error counters including this sample, so window counts are exact while the
    /// window starts inside the ring.
    var cumulativeRequests: Int
    var cumulativeErrors: Int
}

/// Per-version recorder: counters, histogram, a ring of recent samples, and per-second counts for the last hour
/// (used for window counts that reach further back than the ring).
struct VersionRecorder: Sendable {
    static let defaultRingCapacity = 10_000
    static let secondsKept = 3_600

    var requests = 0
    var errors = 0
    var histogram = LatencyHistogram()
    private(set) var ring: [LatencySample] = []
    private var ringHead = 0  // index of the oldest sample once the ring is full
    let ringCapacity: Int
    /// slot = second % secondsKept: (second, requests, errors)
    private var perSecond: [(second: Int64, requests: Int, errors: Int)]

    init(ringCapacity: Int = VersionRecorder.defaultRingCapacity) {
        self.ringCapacity = max(1, ringCapacity)
        self.perSecond = Array(repeating: (second: -1, requests: 0, errors: 0), count: Self.secondsKept)
        self.ring.reserveCapacity(min(self.ringCapacity, 1024))
    }

    mutating func record(milliseconds: Double, isError: Bool, at instant: ContinuousClock.Instant, second: Int64) {
        self.requests += 1
        if isError { self.errors += 1 }
        self.histogram.record(milliseconds)
        let sample = LatencySample(
            at: instant,
            milliseconds: milliseconds,
            isError: isError,
            cumulativeRequests: self.requests,
            cumulativeErrors: self.errors
        )
        if self.ring.count < self.ringCapacity {
            self.ring.append(sample)
        } else {
            self.ring[self.ringHead] = sample
            self.ringHead = (self.ringHead + 1) % self.ringCapacity
        }
        let slot = Int(second % Int64(Self.secondsKept))
        if self.perSecond[slot].second != second {
            self.perSecond[slot] = (second: second, requests: 0, errors: 0)
        }
        self.perSecond[slot].requests += 1
        if isError { self.perSecond[slot].errors += 1 }
    }

    /// Samples oldest first.
    var orderedSamples: [LatencySample] {
        if self.ring.count < self.ringCapacity || self.ringHead == 0 { return self.ring }
        return Array(self.ring[self.ringHead...] + self.ring[..<self.ringHead])
    }

    private var oldest: LatencySample? {
        self.ring.isEmpty ? nil : (self.ring.count < self.ringCapacity ? self.ring[0] : self.ring[self.ringHead])
    }

    /// Counts and latencies of the responses recorded at or after `since`.
    func window(since: ContinuousClock.Instant, sinceSecond: Int64, nowSecond: Int64) -> (requests: Int, errors: Int, latencies: [Double]) {
        let samples = self.orderedSamples
        // first index with at >= since (samples are in time order)
        var low = 0
        var high = samples.count
        while low < high {
            let mid = (low + high) / 2
            if samples[mid].at < since { low = mid + 1 } else { high = mid }
        }
        let inWindow = samples[low...]
        let latencies = inWindow.map(\.milliseconds)
        guard let first = inWindow.first else { return (0, 0, []) }
        if let oldest = self.oldest, oldest.at < since || self.requests == self.ring.count {
            // The ring covers the whole window: exact counts.
            return (
                self.requests - first.cumulativeRequests + 1,
                self.errors - first.cumulativeErrors + (first.isError ? 1 : 0),
                latencies
            )
        }
        // The window reaches further back than the ring: per-second counts (whole seconds, up to an hour).
        var requests = 0
        var errors = 0
        let from = max(sinceSecond, nowSecond - Int64(Self.secondsKept) + 1)
        if from <= nowSecond {
            for second in from...nowSecond {
                let entry = self.perSecond[Int(second % Int64(Self.secondsKept))]
                if entry.second == second {
                    requests += entry.requests
                    errors += entry.errors
                }
            }
        }
        return (max(requests, latencies.count), errors, latencies)
    }
}

/// All versions' recorders behind one lock.
final class RouterMetricsStore: Sendable {
    private struct State: Sendable {
        var versions: [String: VersionRecorder] = [:]
    }

    private let state = Mutex(State())
    private let origin: ContinuousClock.Instant
    let ringCapacity: Int

    init(ringCapacity: Int = VersionRecorder.defaultRingCapacity) {
        self.origin = .now
        self.ringCapacity = ringCapacity
    }

    private func second(of instant: ContinuousClock.Instant) -> Int64 {
        let elapsed = instant - self.origin
        return elapsed < .zero ? -1 : elapsed.components.seconds
    }

    func record(version: String, milliseconds: Double, isError: Bool, at instant: ContinuousClock.Instant = .now) {
        let second = self.second(of: instant)
        let capacity = self.ringCapacity
        self.state.withLock { state in
            state.versions[version, default: VersionRecorder(ringCapacity: capacity)]
                .record(milliseconds: milliseconds, isError: isError, at: instant, second: second)
        }
    }

    func metrics(since: ContinuousClock.Instant?) -> [String: VersionMetrics] {
        guard let since else {
            return self.state.withLock { state in
                state.versions.mapValues { recorder in
                    VersionMetrics(
                        requests: recorder.requests,
                        errors: recorder.errors,
                        p50: recorder.histogram.percentile(0.50),
                        p90: recorder.histogram.percentile(0.90),
                        p99: recorder.histogram.percentile(0.99)
                    )
                }
            }
        }
        let windows = self.allWindows(since: since)
        return windows.mapValues { window in
            let sorted = window.latencies.sorted()
            return VersionMetrics(
                requests: window.requests,
                errors: window.errors,
                p50: exactPercentile(sorted, 0.50),
                p90: exactPercentile(sorted, 0.90),
                p99: exactPercentile(sorted, 0.99)
            )
        }
    }

    private func allWindows(since: ContinuousClock.Instant) -> [String: (requests: Int, errors: Int, latencies: [Double])] {
        let sinceSecond = self.second(of: since)
        let nowSecond = self.second(of: .now)
        // Copy the recorders under the lock (copy-on-write: cheap), compute outside it.
        let versions = self.state.withLock { $0.versions }
        return versions.mapValues { $0.window(since: since, sinceSecond: sinceSecond, nowSecond: nowSecond) }
    }

    func window(version: String, since: ContinuousClock.Instant) -> (requests: Int, errors: Int, latencies: [Double]) {
        let sinceSecond = self.second(of: since)
        let nowSecond = self.second(of: .now)
        guard let recorder = self.state.withLock({ $0.versions[version] }) else { return (0, 0, []) }
        return recorder.window(since: since, sinceSecond: sinceSecond, nowSecond: nowSecond)
    }
}

/// Nearest-rank percentile of sorted values.
func exactPercentile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let rank = max(1, Int((q * Double(sorted.count)).rounded(.up)))
    return sorted[min(rank, sorted.count) - 1]
}

extension Double {
    fileprivate var log10: Double { Foundation.log10(self) }
}

private func pow10(_ step: Int, over perDecade: Double) -> Double {
    Foundation.pow(10, Double(step) / perDecade)
}
