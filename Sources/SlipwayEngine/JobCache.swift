import Foundation
import SlipwayCore
import SlipwayStore
import Synchronization

/// The content-addressed job cache: keys from `CacheKey`, outputs in the database, artifacts under
/// `.slipway/cache/<key>/`.
struct JobCache: Sendable {
    let store: RunStore
    let layout: DataLayout

    /// Key = resolved definition + contents of `cache.inputs` files in the snapshot + each need's outputs and artifacts.
    func key(for attempt: AttemptContext, needOutputs: [String: [[String: String]]], snapshot: SnapshotIndex) -> CacheKey {
        var files: [String: String] = [:]
        let patterns = attempt.resolved.cacheInputs ?? []
        if !patterns.isEmpty {
            for path in snapshot.files where Glob.matchesList(patterns, path) {
                files[path] = snapshot.digest(of: path)
            }
        }
        var upstream: [String: String] = [:]
        for (need, outputsList) in needOutputs {
            var text = ""
            for outputs in outputsList {
                for name in outputs.keys.sorted() { text += "\(name)=\(outputs[name]!)\n" }
                text += "--\n"
            }
            for directory in attempt.upstreamArtifacts where directory.contains("/artifacts/\(FileTree.safeName(need))") {
                text += "artifacts:" + FileTree.digest(ofTree: directory) + "\n"
            }
            upstream[need] = CacheKey.hex(Data(text.utf8))
        }
        return CacheKey.make(job: attempt.resolved, inputFiles: files, upstream: upstream)
    }

    /// Restores a hit's artifacts into the run's artifact store and returns its outputs; nil on a miss.
    func restore(key: CacheKey, into artifacts: String) -> [String: String]? {
        guard let entry = try? store.cacheEntry(key: key.digest) else { return nil }
        if let saved = entry.artifactsPath {
            guard FileManager.default.fileExists(atPath: saved) else { return nil }
            try? FileManager.default.removeItem(atPath: artifacts)
            do { try FileTree.copyContents(of: saved, into: artifacts) } catch { return nil }
        }
        return (try? JSONDecoder().decode([String: String].self, from: Data(entry.outputs.utf8))) ?? [:]
    }

    func save(key: CacheKey, jobKey: String, outputs: [String: String], artifacts: String, runID: Int64) {
        let digest = key.digest
        var savedPath: String?
        var artifactsDigest: String?
        if FileManager.default.fileExists(atPath: artifacts) {
            let target = layout.cacheArtifacts(digest)
            let temporary = target + ".tmp-\(getpid())"
            try? FileManager.default.removeItem(atPath: temporary)
            do {
                try FileTree.copyContents(of: artifacts, into: temporary)
                try? FileManager.default.removeItem(atPath: target)
                // Rename is atomic: a crash never leaves a half-written cache entry behind a key.
                try FileManager.default.moveItem(atPath: temporary, toPath: target)
                savedPath = target
                artifactsDigest = FileTree.digest(ofTree: target)
            } catch {
                return
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let outputsJSON = String(decoding: (try? encoder.encode(outputs)) ?? Data("{}".utf8), as: UTF8.self)
        let components = String(decoding: (try? encoder.encode(key)) ?? Data("{}".utf8), as: UTF8.self)
        try? store.putCacheEntry(CacheEntryRecord(key: digest, jobKey: jobKey, components: components, outputs: outputsJSON, artifactsPath: savedPath, artifactsDigest: artifactsDigest, runID: runID))
    }
}

/// The run's snapshot never changes while the run lasts: list it once and hash each file at most once,
/// however many jobs name it in `cache.inputs`.
final class SnapshotIndex: Sendable {
    let root: String
    let listing = Mutex<[String]?>(nil)
    let digests = Mutex<[String: String]>([:])

    init(root: String) { self.root = root }

    /// Listed on first use: runs without cached jobs never walk the tree.
    var files: [String] {
        if let files = listing.withLock({ $0 }) { return files }
        let files = FileTree.files(under: root)
        listing.withLock { $0 = files }
        return files
    }

    func digest(of path: String) -> String {
        if let known = digests.withLock({ $0[path] }) { return known }
        let digest = FileTree.sha256(ofFile: root + "/" + path) ?? "unreadable"
        digests.withLock { $0[path] = digest }
        return digest
    }
}
