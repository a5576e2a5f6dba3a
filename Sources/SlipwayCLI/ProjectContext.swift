import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore

/// Options shared by commands that work on a project.
struct ProjectOptions: ParsableArguments {
    @Option(name: .long, help: "The pipeline file.")
    var file: String = "slipway.yml"

    @Option(name: .customLong("data-dir"), help: "Where Slipway keeps state (default: .slipway next to the pipeline file).")
    var dataDirectory: String?
}

/// A project on disk: its pipeline file, its directory, its state.
struct ProjectContext {
    var fileURL: URL
    var displayName: String
    var projectDirectory: String
    var layout: DataLayout

    init(_ options: ProjectOptions) {
        self.init(file: options.file, dataDirectory: options.dataDirectory)
    }

    init(file: String, dataDirectory: String?) {
        let cwd = FileManager.default.currentDirectoryPath
        let url = URL(fileURLWithPath: file, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true)).standardizedFileURL
        fileURL = url
        displayName = file
        projectDirectory = url.deletingLastPathComponent().path
        let dataDir = dataDirectory ?? ProcessInfo.processInfo.environment["SLIPWAY_DATA_DIR"] ?? (projectDirectory + "/.slipway")
        layout = DataLayout(root: URL(fileURLWithPath: dataDir, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true)).standardizedFileURL.path)
    }

    /// Loads and validates the pipeline; prints every diagnostic and throws exit 2 when there are errors.
    func loadPipeline() throws -> (Pipeline, String) {
        let result = PipelineLoader.load(contentsOf: fileURL, displayName: displayName)
        let text = result.text ?? ""
        DiagnosticRenderer.print(result.diagnostics, source: text)
        guard let pipeline = result.pipeline else {
            let count = result.errors.count
            throw CLIError.badInput("\(displayName): \(count) error\(count == 1 ? "" : "s"); nothing was run")
        }
        return (pipeline, text)
    }

    func openStore(create: Bool) throws -> SQLRunStore {
        if !create, !FileManager.default.fileExists(atPath: layout.database) {
            throw CLIError.badInput("no runs yet in \(layout.root); start one with `slipway run`")
        }
        do {
            try FileManager.default.createDirectory(atPath: layout.root, withIntermediateDirectories: true)
            // Keeps state, logs and the secrets file out of git even if the project does not ignore it. Written
            // without FileManager's fsync (4 ms of a first run's start): one lost in a crash, or left empty, is
            // written again by the next command.
            let ignore = layout.root + "/.gitignore"
            var info = stat()
            if stat(ignore, &info) != 0 || info.st_size == 0 {
                let file = open(ignore, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if file >= 0 {
                    _ = write(file, "*\n", 2)
                    close(file)
                }
            }
            return try SQLRunStore(path: layout.database)
        } catch let error as StoreError {
            throw CLIError.failure(error.message)
        }
    }

    /// Secrets from `SLIPWAY_SECRET_<NAME>` variables and the `.slipway/secrets` file (KEY=VALUE lines).
    func loadSecrets() throws -> [String: String] {
        var secrets: [String: String] = [:]
        if let data = FileManager.default.contents(atPath: layout.secretsFile) {
            let parsed = KeyValueFile.parse(String(decoding: data, as: UTF8.self))
            if let problem = parsed.problems.first {
                // The message names the line, never the value.
                throw CLIError.badInput("\(layout.secretsFile): \(problem); write NAME=value or NAME<<EOF … EOF")
            }
            for (name, value) in parsed.values { secrets[name] = value }
        }
        for (name, value) in ProcessInfo.processInfo.environment where name.hasPrefix("SLIPWAY_SECRET_") {
            let secretName = String(name.dropFirst("SLIPWAY_SECRET_".count))
            if !secretName.isEmpty { secrets[secretName] = value }
        }
        return secrets
    }

    /// A run by number, or the latest one.
    func findRun(_ store: SQLRunStore, number: Int64?) throws -> RunRecord {
        if let number {
            guard let run = try store.run(number: number) else { throw CLIError.badInput("there is no run #\(number); see `slipway history`") }
            return run
        }
        guard let run = try store.runs(limit: 1).first else { throw CLIError.badInput("no runs yet; start one with `slipway run`") }
        return run
    }
}

/// Prints diagnostics like a compiler: location, message, the source line, a caret, and the hint.
enum DiagnosticRenderer {
    static func print(_ diagnostics: [Diagnostic], source: String) {
        guard !diagnostics.isEmpty else { return }
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false)
        var output = ""
        for diagnostic in diagnostics {
            let label = diagnostic.severity == .error ? Terminal.red("error") : Terminal.yellow("warning")
            output += "\(Terminal.bold(diagnostic.location.description)): \(label): \(diagnostic.message)\n"
            let index = diagnostic.location.line - 1
            if index >= 0, index < lines.count, lines[index].count <= 300 {
                let line = String(lines[index]).replacingOccurrences(of: "\t", with: " ")
                output += "  \(line)\n"
                output += "  " + String(repeating: " ", count: max(0, min(diagnostic.location.column - 1, line.count))) + Terminal.green("^") + "\n"
            }
            if let hint = diagnostic.hint { output += "  \(Terminal.cyan("hint")): \(hint)\n" }
        }
        Terminal.write(Array(output.utf8), fd: 2)
    }
}
