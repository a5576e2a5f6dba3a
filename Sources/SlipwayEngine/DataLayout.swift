import Foundation

/// Where a project's state lives: `.slipway/` next to the pipeline file.
public struct DataLayout: Sendable {
    public var root: String

    public init(root: String) { self.root = root }

    public var database: String { root + "/state.db" }
    public var secretsFile: String { root + "/secrets" }
    public var cacheRoot: String { root + "/cache" }
    public func run(_ number: Int64) -> String { root + "/runs/\(number)" }
    public func snapshot(_ number: Int64) -> String { run(number) + "/snapshot" }
    public func workspace(_ number: Int64, job: String) -> String { run(number) + "/ws/" + FileTree.safeName(job) }
    public func artifacts(_ number: Int64, job: String) -> String { run(number) + "/artifacts/" + FileTree.safeName(job) }
    public func outputFile(_ number: Int64, job: String, attempt: Int) -> String { run(number) + "/outputs/" + FileTree.safeName(job) + "-\(attempt)" }
    public func log(_ number: Int64, job: String, attempt: Int, step: Int) -> String {
        // Flat: one directory for the whole run, so a job costs no extra mkdir.
        run(number) + "/logs/" + FileTree.safeName(job) + ".\(attempt)-\(step + 1).log"
    }
    public func cacheArtifacts(_ key: String) -> String { cacheRoot + "/" + key }
}
