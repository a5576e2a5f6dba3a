import Foundation
import SlipwayCore

// MARK: - Error

/// Why a host-level step of an `ssh` deploy failed, in words that say what to do. Failures of ssh itself
/// (refused, unknown host key, timeouts, …) are thrown as `SSHError`, with the step in their message.
public struct SSHDeployError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A version name, digest, directory or `keep` that cannot be used.
        case invalidArgument
        /// `activate` of a version that `install` has not (completely) put on the host.
        case notInstalled(version: String)
        /// The target's `start` command exited non-zero.
        case startFailed(version: String, exitCode: Int32)
        /// The target's `stop` command exited non-zero.
        case stopFailed(version: String, exitCode: Int32)
        /// `waitHealthy` saw no run of `healthyAfter` good answers before its deadline.
        case unhealthy
        /// `<directory>/current` holds something that is not a version name.
        case invalidState
    }

    public let kind: Kind
    /// `user@host:port` of the host.
    public let destination: String
    /// The end of the command's stderr (else stdout), the last health probe failure, or what is wrong.
    public let detail: String
    public let description: String

    init(_ kind: Kind, endpoint: SSHEndpoint, detail: String, message: String) {
        self.kind = kind
        self.destination = endpoint.description
        self.detail = detail
        self.description = message
    }

    public static func == (lhs: SSHDeployError, rhs: SSHDeployError) -> Bool {
        lhs.kind == rhs.kind && lhs.destination == rhs.destination && lhs.detail == rhs.detail
    }
}

// MARK: - Deployer

/// The host-level operations of an `ssh` target, one host at a time. On each host:
///
///     <directory>/<version>/                    one unpacked release, uploaded once
///     <directory>/<version>/.slipway-installed  its content digest, written after a complete upload
///     <directory>/<version>/.slipway-start.out  stdout and stderr of the last `start` (`.err`), likewise
///                                               `.slipway-stop.out`/`.err`; output the app inherits lands here
///     <directory>/current                       the active version's name
///
/// `start` and `stop` run with the remote user's shell as `cd <directory>/<version> && ( <command> )`, with
/// `PORT` (the target's `appPort`), `SLIPWAY_VERSION` and `SLIPWAY_HOST` (the host's address) set, stdin from
/// /dev/null and their output in the files above — so a start command that leaves a server running in the
/// background does not hold the ssh session open. A relative `directory` (or `~/…`) is relative to the
/// remote user's home.
public struct SSHDeployer: Sendable {
    public enum Installation: Sendable, Equatable {
        /// The release was copied to the host.
        case uploaded
        /// `<directory>/<version>` was already installed with the same digest; nothing was copied.
        case alreadyInstalled
    }

    public let target: SSHTarget
    /// A known_hosts file checked strictly; nil: the user's own ssh defaults.
    public let knownHosts: String?
    public var transport: SSHTransport
    public var http: HTTPClient
    /// Longest a `start` or `stop` command may run.
    public var commandTimeout: Duration = .seconds(120)
    /// Longest one upload of a release may take.
    public var uploadTimeout: Duration = .seconds(600)
    /// Longest the small bookkeeping commands (read or write `current`, the marker, …) may take.
    public var bookkeepingTimeout: Duration = .seconds(30)

    static let marker = ".slipway-installed"
    static let currentFile = "current"

    public init(target: SSHTarget, knownHosts: String? = nil, transport: SSHTransport = SSHTransport(), http: HTTPClient = HTTPClient()) {
        self.target = target
        self.knownHosts = knownHosts
        self.transport = transport
        self.http = http
    }

    /// How an entry of `target.hosts` is reached.
    public func endpoint(for host: String) -> SSHEndpoint {
        SSHEndpoint(target: target, host: host, knownHosts: knownHosts)
    }

    // MARK: Install

    /// Copies the unpacked release in `localDirectory` to `<directory>/<version>` on the host, then records
    /// `digest` in its `.slipway-installed` marker. Skipped when the marker already holds `digest`. Any
    /// other marker is removed before copying, so an interrupted copy is never taken as installed.
    @discardableResult
    public func install(version: String, digest: String, from localDirectory: String, on host: String) async throws -> Installation {
        let endpoint = endpoint(for: host)
        try validate(version: version, endpoint: endpoint)
        guard !digest.isEmpty, !digest.contains(where: { $0.isNewline || $0.asciiValue.map { $0 < 32 } == true }) else {
            throw SSHDeployError(.invalidArgument, endpoint: endpoint, detail: "digest",
                                 message: "cannot install version \(version) on \(endpoint): the digest '\(digest)' is empty or spans lines")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: localDirectory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SSHDeployError(.invalidArgument, endpoint: endpoint, detail: "localDirectory",
                                 message: "cannot install version \(version) on \(endpoint): the unpacked release \(localDirectory) is not a directory here")
        }
        let base = try baseDirectory(endpoint)
        let directory = base + "/" + version
        let marker = SSHTransport.quote(directory + "/" + Self.marker)
        let context = "installing version \(version) on \(endpoint)"
        let check = """
            if [ -f \(marker) ] && [ "$(cat -- \(marker))" = \(SSHTransport.quote(digest)) ]; then echo slipway-installed; \
            else rm -f -- \(marker); fi
            """
        let checked = try await run(endpoint, check, context: context)
        if checked.stdout.split(whereSeparator: \.isNewline).contains("slipway-installed") { return .alreadyInstalled }

        try await transport.upload(directory: localDirectory, to: endpoint, remoteDirectory: directory, timeout: uploadTimeout)

        let temporary = SSHTransport.quote(directory + "/" + Self.marker + ".tmp")
        try await run(endpoint, "printf '%s\\n' \(SSHTransport.quote(digest)) > \(temporary) && mv -f -- \(temporary) \(marker)",
                      context: "\(context): cannot write its marker")
        return .uploaded
    }

    /// Whether `<directory>/<version>` is completely installed (whatever its digest).
    public func isInstalled(version: String, on host: String) async throws -> Bool {
        let endpoint = endpoint(for: host)
        try validate(version: version, endpoint: endpoint)
        let base = try baseDirectory(endpoint)
        return try await installedAndCurrent(version, endpoint: endpoint, base: base).installed
    }

    // MARK: Activate

    /// Stops the active version (if any; skipped when its directory is gone), starts `version`, and makes it
    /// the current one. When the start command fails the new version is stopped again (best effort),
    /// `current` is removed — nothing is active then — and the error says what ran and what it printed.
    /// Activating the current version again restarts it. Two ssh connections, three when a version was
    /// active. Operations on one host are not locked against each other: run one at a time per host.
    public func activate(version: String, on host: String) async throws {
        let endpoint = endpoint(for: host)
        try validate(version: version, endpoint: endpoint)
        let base = try baseDirectory(endpoint)
        let (installed, previous) = try await installedAndCurrent(version, endpoint: endpoint, base: base)
        guard installed else {
            throw SSHDeployError(.notInstalled(version: version), endpoint: endpoint, detail: "",
                                 message: "cannot activate version \(version) on \(endpoint): it is not installed in \(base)/\(version) (install it first; an interrupted install leaves no .slipway-installed marker)")
        }
        if let previous {
            try await hook(.stop, version: previous, endpoint: endpoint, base: base,
                           consequence: "version \(version) was not started and \(previous) may still be running; fix the stop command (it should also succeed when the app is already stopped) and activate again")
        }
        let file = SSHTransport.quote(base + "/" + Self.currentFile)
        let temporary = SSHTransport.quote(base + "/." + Self.currentFile + ".tmp")
        do {
            try await hook(.start, version: version, endpoint: endpoint, base: base,
                           consequence: previous.map { "\($0) was stopped first, so nothing is active on this host now: fix the release or the start command and activate again, or activate \($0) to roll back" }
                               ?? "nothing is active on this host: fix the release or the start command and activate again",
                           then: "printf '%s\\n' \(SSHTransport.quote(version)) > \(temporary) && mv -f -- \(temporary) \(file)",
                           thenContext: "recording \(version) as the current version on \(endpoint)")
        } catch let error as CancellationError {
            throw error
        } catch {
            // Whatever the start command left half-started, and a `current` naming a stopped version.
            let deployer = self
            await Task {
                _ = try? await deployer.hook(.stop, version: version, endpoint: endpoint, base: base, consequence: "", then: "rm -f -- \(file)")
            }.value
            throw error
        }
    }

    /// The active version: the content of `<directory>/current`, nil when there is none.
    public func current(on host: String) async throws -> String? {
        let endpoint = endpoint(for: host)
        let base = try baseDirectory(endpoint)
        return try await withCurrent(":", endpoint: endpoint, base: base, context: "reading the current version on \(endpoint)").current
    }

    /// Runs `stop` for the current version (if any) and removes `current`. Nothing to do when no version is
    /// active; when `stop` fails, `current` is kept.
    public func deactivate(on host: String) async throws {
        let endpoint = endpoint(for: host)
        let base = try baseDirectory(endpoint)
        let context = "reading the current version on \(endpoint)"
        guard let active = try await withCurrent(":", endpoint: endpoint, base: base, context: context).current else { return }
        try await hook(.stop, version: active, endpoint: endpoint, base: base,
                       consequence: "\(active) may still be running and stays the current version; fix the stop command and deactivate again",
                       then: "rm -f -- \(SSHTransport.quote(base + "/" + Self.currentFile))",
                       thenContext: "removing the current version marker on \(endpoint)")
    }

    // MARK: Health

    /// Polls `http://<host address>:<appPort><health.path>` every `health.interval` until `health.healthyAfter`
    /// consecutive answers are 2xx or 3xx; throws `SSHDeployError.Kind.unhealthy` with the last failure when
    /// `deadline` passes first.
    public func waitHealthy(host: String, deadline: Duration) async throws {
        let endpoint = endpoint(for: host)
        try endpoint.validate()
        let health = target.health
        let address = endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host
        let path = health.path.hasPrefix("/") ? health.path : "/" + health.path
        let url = "http://\(address):\(target.appPort)\(path)"
        let needed = max(1, health.healthyAfter)
        let interval = max(health.interval, .milliseconds(10))
        let clock = ContinuousClock()
        let end = clock.now + deadline
        var streak = 0
        var probes = 0
        var lastFailure: String?
        while true {
            probes += 1
            let timeout = max(.milliseconds(50), min(health.timeout, end - clock.now))
            do {
                let response = try await http.get(url, timeout: timeout)
                if (200..<400).contains(response.status) {
                    streak += 1
                    if streak >= needed { return }
                } else {
                    streak = 0
                    lastFailure = "HTTP \(response.status)" + Self.bodySnippet(response)
                }
            } catch {
                try Task.checkCancellation()
                streak = 0
                // A probe cut short by the deadline says less than the failure before it.
                let cutShort = timeout < health.timeout && (error as? HTTPClientError).map { if case .timedOut = $0 { true } else { false } } == true
                if !cutShort || lastFailure == nil { lastFailure = "\(error)" }
            }
            let next = clock.now + interval
            if next > end {
                let progress = streak > 0 ? "; the last \(streak) answer\(streak == 1 ? " was" : "s were") good, \(needed) in a row are needed" : ""
                let failure = lastFailure ?? "none"
                throw SSHDeployError(.unhealthy, endpoint: endpoint, detail: failure, message: """
                    the app on \(endpoint) was not healthy within \(SSHError.format(deadline)): GET \(url) \
                    (\(probes) probe\(probes == 1 ? "" : "s"), the last failure: \(failure))\(progress). \
                    Check that the start command makes the app listen on \(endpoint.host):\(target.appPort) \
                    (PORT and SLIPWAY_HOST are set for it) and answer \(path) with 2xx or 3xx; its output is in \
                    \((try? baseDirectory(endpoint)) ?? target.directory)/<version>/.slipway-start.out and .slipway-start.err
                    """)
            }
            try await Task.sleep(until: next, clock: clock)
        }
    }

    static func bodySnippet(_ response: HTTPResponse) -> String {
        let type = response.header("Content-Type")?.lowercased() ?? ""
        guard type.hasPrefix("text/plain") || type.hasPrefix("application/json") else { return "" }
        let text = response.text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        guard !text.isEmpty else { return "" }
        return ": " + (text.count > 200 ? text.prefix(200) + "…" : text)
    }

    // MARK: Prune

    /// Removes installed version directories beyond the newest `keep` (by install time, the marker's
    /// modification time), never the current version. Directories without a `.slipway-installed` marker
    /// are left alone. Returns the removed versions, oldest last.
    @discardableResult
    public func prune(on host: String, keep: Int) async throws -> [String] {
        let endpoint = endpoint(for: host)
        guard keep >= 0 else {
            throw SSHDeployError(.invalidArgument, endpoint: endpoint, detail: "keep",
                                 message: "cannot prune releases on \(endpoint): keep is \(keep), it must be 0 or more")
        }
        let base = try baseDirectory(endpoint)
        let context = "pruning old releases in \(base) on \(endpoint)"
        // Newest first; `*/` skips dot-directories such as scp staging leftovers.
        let (listing, active) = try await withCurrent(
            "( cd -- \(SSHTransport.quote(base)) 2>/dev/null && ls -1td -- */\(Self.marker) 2>/dev/null )",
            endpoint: endpoint, base: base, context: context)
        let suffix = "/" + Self.marker
        let versions = listing.split(whereSeparator: \.isNewline).map(String.init)
            .filter { $0.hasSuffix(suffix) }
            .map { String($0.dropLast(suffix.count)) }
            .filter { Self.isValidVersion($0) }
        let doomed = versions.dropFirst(keep).filter { $0 != active }
        guard !doomed.isEmpty else { return [] }
        try await run(endpoint, "cd -- \(SSHTransport.quote(base)) && rm -rf -- " + doomed.map(SSHTransport.quote).joined(separator: " "),
                      context: context)
        return Array(doomed)
    }

    // MARK: Helpers

    enum Hook: String {
        case start, stop
    }

    static let hookSucceeded = "slipway-hook-succeeded"

    /// Runs the target's `start` or `stop` in `<directory>/<version>` (a stop whose directory is gone is
    /// skipped), then, when it succeeded, the shell command `then` — all in one connection. A failing `then`
    /// is an `SSHError` naming `thenContext`.
    func hook(_ hook: Hook, version: String, endpoint: SSHEndpoint, base: String, consequence: String,
              then: String = ":", thenContext: String = "") async throws {
        let directory = base + "/" + version
        let command = hook == .start ? target.start : target.stop
        let quoted = SSHTransport.quote(directory)
        let out = SSHTransport.quote(directory + "/.slipway-\(hook.rawValue).out")
        let err = SSHTransport.quote(directory + "/.slipway-\(hook.rawValue).err")
        // The command in a subshell (its `exit` ends only that), on lines of its own (it may end in `&` or a
        // comment), its output in files (a server it leaves running must not hold the session open).
        let script = """
            \(hook == .stop ? "if [ ! -d \(quoted) ]; then echo \(Self.hookSucceeded); \(then); exit; fi\n" : "")\
            ( cd -- \(quoted) && (
            \(command)
            ) ) </dev/null >\(out) 2>\(err)
            code=$?
            if [ "$code" -ne 0 ]; then if [ -s \(err) ]; then tail -n 40 \(err); else tail -n 40 \(out); fi >&2; exit "$code"; fi
            echo \(Self.hookSucceeded)
            \(then)
            """
        let environment = [
            "PORT": String(target.appPort),
            "SLIPWAY_VERSION": version,
            "SLIPWAY_HOST": endpoint.host,
        ]
        let verb = hook == .start ? "starting" : "stopping"
        let result = try await run(endpoint, script, environment: environment, timeout: commandTimeout,
                                   context: "\(verb) version \(version) on \(endpoint)", check: false)
        guard result.exitCode != 0 else { return }
        let detail = SSHError.tail(result.stderr)
        if result.stdout.split(whereSeparator: \.isNewline).contains(Substring(Self.hookSucceeded)) {
            throw SSHError(.commandFailed(exitCode: result.exitCode), endpoint: endpoint, detail: detail,
                           context: thenContext.isEmpty ? nil : thenContext)
        }
        let kind: SSHDeployError.Kind = hook == .start
            ? .startFailed(version: version, exitCode: result.exitCode)
            : .stopFailed(version: version, exitCode: result.exitCode)
        let output = detail.isEmpty ? " (it printed nothing)" : ":\n\(detail)"
        throw SSHDeployError(kind, endpoint: endpoint, detail: detail, message: """
            \(verb) version \(version) on \(endpoint) failed: the \(hook.rawValue) command `\(command)` exited with code \
            \(result.exitCode) in \(directory)\(output)
            \(Self.sentence(consequence))
            """.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `text` with a capital first letter and a full stop; empty stays empty.
    static func sentence(_ text: String) -> String {
        guard let first = text.first else { return "" }
        return first.uppercased() + text.dropFirst() + "."
    }

    static let currentSeparator = "slipway-current:"

    /// Runs `query`, then reads `current`, in one connection: the query's stdout and the current version.
    func withCurrent(_ query: String, endpoint: SSHEndpoint, base: String, context: String) async throws -> (output: String, current: String?) {
        let file = base + "/" + Self.currentFile
        let quoted = SSHTransport.quote(file)
        let result = try await run(endpoint, "\(query)\necho \(Self.currentSeparator)\nif [ -f \(quoted) ]; then cat -- \(quoted); fi",
                                   context: context)
        guard let range = result.stdout.range(of: Self.currentSeparator + "\n", options: .backwards) else {
            throw SSHError(.commandFailed(exitCode: result.exitCode), endpoint: endpoint, detail: "unexpected output: \(SSHError.tail(result.stdout))", context: context)
        }
        let output = String(result.stdout[..<range.lowerBound])
        let name = result.stdout[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty { return (output, nil) }
        guard Self.isValidVersion(name) else {
            throw SSHDeployError(.invalidState, endpoint: endpoint, detail: String(name.prefix(200)),
                                 message: "\(file) on \(endpoint) should hold the name of the active version but holds '\(name.prefix(200))'; put the right version name in it, or remove it if no version is running")
        }
        return (output, name)
    }

    /// Whether `version` is installed, and the current version, in one connection.
    func installedAndCurrent(_ version: String, endpoint: SSHEndpoint, base: String) async throws -> (installed: Bool, current: String?) {
        let marker = SSHTransport.quote(base + "/" + version + "/" + Self.marker)
        let (output, current) = try await withCurrent("if [ -f \(marker) ]; then echo slipway-installed; fi", endpoint: endpoint, base: base,
                                                      context: "reading the state of \(base) on \(endpoint)")
        return (output.split(whereSeparator: \.isNewline).contains("slipway-installed"), current)
    }

    /// Runs a command; with `check`, a non-zero exit is an `SSHError` naming `context`. ssh failures are
    /// rethrown with `context` in their message.
    @discardableResult
    func run(_ endpoint: SSHEndpoint, _ command: String, environment: [String: String] = [:], timeout: Duration? = nil,
             context: String, check: Bool = true) async throws -> SSHResult {
        let result: SSHResult
        do {
            result = try await transport.run(endpoint, command, environment: environment, timeout: timeout ?? bookkeepingTimeout)
        } catch let error as SSHError {
            throw SSHError(error.kind, endpoint: endpoint, detail: error.detail, context: context.isEmpty ? nil : context)
        }
        if check, result.exitCode != 0 {
            throw SSHError(.commandFailed(exitCode: result.exitCode), endpoint: endpoint, detail: SSHError.tail(result.stderr),
                           context: context.isEmpty ? nil : context)
        }
        return result
    }

    /// The target's directory as used in remote commands (`~/x` → `x`); `/`, `~` and `.` are refused.
    func baseDirectory(_ endpoint: SSHEndpoint) throws -> String {
        do {
            return try SSHTransport.remotePath(target.directory, endpoint: endpoint)
        } catch {
            throw SSHDeployError(.invalidArgument, endpoint: endpoint, detail: "directory",
                                 message: "the ssh target's directory '\(target.directory)' cannot hold releases: give a dedicated directory, e.g. /srv/<app>")
        }
    }

    func validate(version: String, endpoint: SSHEndpoint) throws {
        guard Self.isValidVersion(version) else {
            throw SSHDeployError(.invalidArgument, endpoint: endpoint, detail: "version",
                                 message: "'\(version)' cannot be used as a version directory on \(endpoint): a version is up to 128 letters, digits, '.', '_', '+' and '-', does not start with '.' or '-', and is not 'current'")
        }
    }

    /// A release version (`ReleaseSpec.isValidVersion`) other than `current`: one safe directory entry.
    static func isValidVersion(_ name: String) -> Bool {
        name != currentFile && ReleaseSpec.isValidVersion(name)
    }
}
