import ArgumentParser
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayStore

/// Splits "name@version"; exit 2 with a hint when it is malformed.
func parseReference(_ text: String) throws -> (name: String, version: String) {
    guard let at = text.lastIndex(of: "@"), at != text.startIndex, text.index(after: at) != text.endIndex else {
        throw CLIError.badInput("'\(text)' is not NAME@VERSION (e.g. shop@1.2.3); `slipway artifacts ls` lists releases")
    }
    return (String(text[..<at]), String(text[text.index(after: at)...]))
}

extension ProjectContext {
    func releaseService() throws -> ReleaseService {
        ReleaseService(store: try openStore(create: true), dataRoot: layout.root)
    }
}

struct ArtifactsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifacts",
        abstract: "Released artifacts: list, show, verify, download, garbage-collect.",
        subcommands: [List.self, Show.self, Verify.self, Download.self, Collect.self, Digest.self]
    )

    static func formatSize(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List releases, newest first.")
        @OptionGroup var project: ProjectOptions
        @Argument(help: "Only this artifact name.") var name: String?

        func run() throws {
            let service = try ProjectContext(project).releaseService()
            let releases = try service.store.releases(name: name)
            if releases.isEmpty {
                Terminal.print("no releases\(name.map { " of '\($0)'" } ?? ""); add `release: { name, version, path }` to a job")
                return
            }
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
            Terminal.print(Terminal.bold("RELEASE                        DIGEST            SIZE        RUN    CREATED"))
            for release in releases {
                Terminal.print("\(release.reference.padding(toLength: 30, withPad: " ", startingAt: 0)) \(release.digest.prefix(16))  \(formatSize(release.size).padding(toLength: 10, withPad: " ", startingAt: 0))  #\(String(release.runNumber).padding(toLength: 5, withPad: " ", startingAt: 0)) \(formatter.string(from: release.createdAt))")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Everything about one release.")
        @OptionGroup var project: ProjectOptions
        @Argument(help: "NAME@VERSION") var reference: String

        func run() throws {
            let (name, version) = try parseReference(reference)
            let service = try ProjectContext(project).releaseService()
            guard let release = try service.store.release(name: name, version: version) else {
                throw CLIError.badInput("\(reference) was never released here; `slipway artifacts ls` lists releases")
            }
            let deployments = try service.store.deployments(releaseID: release.id)
            let iso = ISO8601DateFormatter()
            Terminal.print(Terminal.bold(release.reference))
            Terminal.print("  digest     sha256:\(release.digest)")
            Terminal.print("  size       \(formatSize(release.size)) (\(release.kind == "directory" ? "directory, packed as a reproducible tar" : "file"))")
            Terminal.print("  commit     \(release.commit ?? "none")")
            Terminal.print("  run        #\(release.runNumber), job \(release.job)")
            Terminal.print("  created    \(iso.string(from: release.createdAt))")
            Terminal.print("  signer     Ed25519 key \(release.keyID)")
            Terminal.print("  blob       \(service.artifacts.blobPath(release.digest))")
            Terminal.print("  provenance \(release.envelopePath)")
            Terminal.print("  sbom       \(release.sbomDigest.map { "sha256:\($0) (\(service.releaseDirectory(name: name, version: version))/sbom.cdx.json)" } ?? "none")")
            let deployedText = deployments.isEmpty ? "nowhere yet" : deployments.map { "\($0.environment) (\($0.status), \(iso.string(from: $0.createdAt)))" }.joined(separator: ", ")
            Terminal.print("  deployed   \(deployedText)")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "verify", abstract: "Check digest, signature, provenance and SBOM; exit 1 with the reason when anything is off.")
        @OptionGroup var project: ProjectOptions
        @Argument(help: "NAME@VERSION") var reference: String

        func run() throws {
            let (name, version) = try parseReference(reference)
            let service = try ProjectContext(project).releaseService()
            let result = service.verify(name: name, version: version)
            for check in result.checks {
                Terminal.print("\(check.passed ? Terminal.green("✓") : Terminal.red("✗")) \(check.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(check.detail)")
            }
            guard result.passed else { throw CLIError.failure("\(reference) failed verification: \(result.failure ?? "unknown")") }
            Terminal.print(Terminal.green("\(reference) verified"))
        }
    }

    struct Download: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "download", abstract: "Verify a release, then copy (or unpack) it into a directory.")
        @OptionGroup var project: ProjectOptions
        @Argument(help: "NAME@VERSION") var reference: String
        @Argument(help: "Destination directory.") var directory: String

        func run() throws {
            let (name, version) = try parseReference(reference)
            let service = try ProjectContext(project).releaseService()
            let verification = service.verify(name: name, version: version)
            guard verification.passed, let release = verification.release else {
                throw CLIError.failure("refusing to download \(reference): \(verification.failure ?? "it did not verify")")
            }
            let blob = StoredBlob(digest: release.digest, size: release.size, kind: StoredBlob.Kind(rawValue: release.kind) ?? .file)
            do { try service.artifacts.extract(blob, to: directory, fileName: "\(name)-\(version)") } catch { throw CLIError.failure(error.message) }
            Terminal.print("\(reference) (sha256:\(release.digest.prefix(16))…) → \(directory)")
        }
    }

    struct Digest: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "digest", abstract: "Pack a file or directory exactly as a release would and print its digest (stored in the content-addressed store, no release recorded).")
        @OptionGroup var project: ProjectOptions
        @Argument(help: "A file or directory.") var path: String
        @Flag(help: "Also sign a statement over it with the active key and print the DSSE envelope.") var sign = false

        func run() throws {
            let service = try ProjectContext(project).releaseService()
            do {
                let blob = try service.artifacts.ingest(path: path)
                Terminal.print("sha256:\(blob.digest) \(blob.size) \(blob.kind.rawValue)")
                guard sign else { return }
                let (id, key) = try service.keys.signingKey()
                let statement = #"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"\#((path as NSString).lastPathComponent)","digest":{"sha256":"\#(blob.digest)"}}],"predicateType":"https://slipway.dev/digest/v1","predicate":{}}"#
                let envelope = try DSSEEnvelope.sign(payload: Data(statement.utf8), payloadType: DSSEEnvelope.inTotoPayloadType, keyID: id, key: key)
                Terminal.print(String(decoding: envelope.encoded(), as: UTF8.self))
            } catch { throw CLIError.failure(error.message) }
        }
    }

    struct Collect: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove old releases, keeping the newest N per name and anything deployed or a rollback target.")
        @OptionGroup var project: ProjectOptions
        @Option(help: "Versions to keep per name.") var keep: Int = 10
        @Flag(name: .customLong("dry-run"), help: "Only say what would be removed.") var dryRun = false

        func validate() throws { if keep < 1 { throw ValidationError("--keep must be at least 1") } }

        func run() throws {
            let service = try ProjectContext(project).releaseService()
            let report: ReleaseService.CollectionReport
            do { report = try service.collectGarbage(keep: keep, dryRun: dryRun) } catch { throw CLIError.failure(error.message) }
            for release in report.removed { Terminal.print("\(dryRun ? "would remove" : "removed") \(release.reference) (\(formatSize(release.size)))") }
            for (release, reason) in report.kept where !reason.hasPrefix("among") { Terminal.print(Terminal.dim("kept \(release.reference): \(reason)")) }
            let orphans = report.orphanBlobsRemoved > 0 ? ", \(report.orphanBlobsRemoved) unreferenced blob(s)" : ""
            Terminal.print("\(dryRun ? "would free" : "freed") \(formatSize(report.bytesFreed)): \(report.removed.count) release(s)\(orphans)")
        }
    }
}

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Show the release signing keys; `keys rotate` makes a new active key (old signatures stay verifiable).",
        subcommands: [Show.self, Rotate.self],
        defaultSubcommand: Show.self
    )

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "List public keys (base64 Ed25519).")
        @OptionGroup var project: ProjectOptions

        func run() throws {
            let context = ProjectContext(project)
            let keys = KeyRing(directory: context.layout.root + "/keys")
            if keys.publicKeys().isEmpty {
                do { try keys.rotate() } catch { throw CLIError.failure(error.message) }
            }
            for key in keys.publicKeys() {
                Terminal.print("\(key.isActive ? Terminal.green("active ") : "retired") \(key.id)  ed25519 \(key.base64)")
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rotate", abstract: "Make a new signing key the active one.")
        @OptionGroup var project: ProjectOptions

        func run() throws {
            let context = ProjectContext(project)
            let keys = KeyRing(directory: context.layout.root + "/keys")
            let previous = keys.activeKeyID()
            do {
                let (id, _) = try keys.rotate()
                Terminal.print("new active key \(id)" + (previous.map { "; \($0) is retired but still verifies earlier releases" } ?? ""))
            } catch { throw CLIError.failure(error.message) }
        }
    }
}
