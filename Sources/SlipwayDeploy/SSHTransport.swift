#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSlipwaySystem
import Foundation
import SlipwayCore
import Synchronization

// MARK: - Endpoint

/// One host of an `ssh` target, with everything needed to reach it.
public struct SSHEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// Host name or address; an IPv6 address without brackets.
    public var host: String
    /// nil: ssh's default (the ssh config, else the local user name).
    public var user: String?
    /// nil: ssh's default (the ssh config, else 22).
    public var port: Int?
    /// Private key file; when set, only this key is offered (`IdentitiesOnly=yes`).
    public var identity: String?
    /// A known_hosts file checked strictly; nil: the user's own ssh defaults.
    public var knownHosts: String?

    public init(host: String, user: String? = nil, port: Int? = nil, identity: String? = nil, knownHosts: String? = nil) {
        self.host = host
        self.user = user
        self.port = port
        self.identity = identity
        self.knownHosts = knownHosts
    }

    /// One entry of `target.hosts`: `host`, `host:port`, `user@host`, `user@host:port`, `[v6]:port`;
    /// a user or port in the entry overrides the target's.
    public init(target: SSHTarget, host entry: String, knownHosts: String? = nil) {
        var rest = Substring(entry.trimmingCharacters(in: .whitespaces))
        var user = target.user
        var port = target.port
        if let at = rest.lastIndex(of: "@") {
            let name = rest[..<at]
            if !name.isEmpty { user = String(name) }
            rest = rest[rest.index(after: at)...]
        }
        var host = String(rest)
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":"), let value = Int(after.dropFirst()), (1...65535).contains(value) { port = value }
        } else if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") {
            // Exactly one colon: host:port. Several: a bare IPv6 address.
            if let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) {
                host = String(rest[..<colon])
                port = value
            }
        }
        self.init(host: host, user: user, port: port, identity: target.identity, knownHosts: knownHosts)
    }

    /// `user@host:port` as a person would write it (the local user and port 22 when not set).
    public var description: String {
        let name = user ?? SSHEndpoint.localUserName
        let address = host.contains(":") ? "[\(host)]" : host
        return "\(name)@\(address):\(port ?? 22)"
    }

    /// `[user@]host` for rsync and scp destinations (IPv6 in brackets).
    var copyDestinationPrefix: String {
        let address = host.contains(":") ? "[\(host)]" : host
        return user.map { "\($0)@\(address)" } ?? address
    }

    static var localUserName: String {
        if let name = ProcessInfo.processInfo.environment["USER"], !name.isEmpty { return name }
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return "root"
    }

    func validate() throws(SSHError) {
        func invalid(_ message: String) -> SSHError { SSHError(.invalidArgument, endpoint: self, detail: message) }
        if host.isEmpty { throw invalid("the host name is empty") }
        if host.hasPrefix("-") { throw invalid("the host name '\(host)' starts with '-'") }
        if host.contains(where: { $0.isWhitespace || $0 == "@" || $0 == "/" || $0 == "'" || $0 == "\"" || $0.asciiValue.map { $0 < 32 } == true }) {
            throw invalid("the host name '\(host)' contains a character a host name cannot have")
        }
        if let user {
            if user.isEmpty || user.hasPrefix("-") || user.contains(where: { $0.isWhitespace || $0 == "@" || $0 == ":" || $0 == "/" || $0.asciiValue.map { $0 < 32 } == true }) {
                throw invalid("the user name '\(user)' is not valid")
            }
        }
        if let port, !(1...65535).contains(port) { throw invalid("the port \(port) is not between 1 and 65535") }
        for path in [identity, knownHosts].compactMap({ $0 }) where path.isEmpty || path.contains("\0") {
            throw invalid("the file path '\(path)' is not valid")
        }
    }
}

// MARK: - Result and error

/// What a remote command did.
public struct SSHResult: Sendable, Equatable {
    public var exitCode: Int32
    /// At most `SSHTransport.outputLimit` bytes; invalid UTF-8 is replaced.
    public var stdout: String
    public var stderr: String
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool
    /// The endpoint, kept for error messages.
    public var endpoint: SSHEndpoint

    public init(exitCode: Int32, stdout: String, stderr: String, stdoutTruncated: Bool = false, stderrTruncated: Bool = false, endpoint: SSHEndpoint) {
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.stderrTruncated = stderrTruncated
        self.endpoint = endpoint
    }

    public var succeeded: Bool { exitCode == 0 }

    /// Self when the command exited 0, else an `SSHError` with the exit code and the end of stderr.
    @discardableResult
    public func requireSuccess() throws(SSHError) -> SSHResult {
        guard exitCode == 0 else {
            throw SSHError(.commandFailed(exitCode: exitCode), endpoint: endpoint, detail: SSHError.tail(stderr))
        }
        return self
    }
}

/// Why talking to a host failed, in words that say what to check.
public struct SSHError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Authentication failed: wrong user, or the key is not authorised on the host.
        case permissionDenied
        /// The host's key is unknown to the known_hosts file in use (`changed`: it differs from the recorded one).
        case hostKeyVerificationFailed(changed: Bool)
        case connectionRefused
        /// Connecting took longer than `ConnectTimeout`.
        case connectTimedOut
        case hostNotFound
        case unreachable
        /// The host closed or reset the connection before or during login.
        case connectionClosed
        /// The command (or copy) did not finish in time; ssh was killed.
        case timedOut(Duration)
        /// The remote command ran and exited non-zero.
        case commandFailed(exitCode: Int32)
        /// rsync or scp failed for a reason other than the connection.
        case copyFailed(tool: String, exitCode: Int32)
        /// ssh failed in a way not recognised above.
        case sshFailed(exitCode: Int32)
        case invalidArgument
        /// ssh, rsync or scp could not be started.
        case cannotStart
    }

    public let kind: Kind
    /// `user@host:port`.
    public let destination: String
    /// The end of ssh's (or the remote command's) stderr, or a detail of the failure.
    public let detail: String
    public let description: String

    init(_ kind: Kind, endpoint: SSHEndpoint, detail: String, context: String? = nil) {
        self.kind = kind
        self.destination = endpoint.description
        self.detail = detail
        self.description = SSHError.message(kind, endpoint: endpoint, detail: detail, context: context)
    }

    public static func == (lhs: SSHError, rhs: SSHError) -> Bool {
        lhs.kind == rhs.kind && lhs.destination == rhs.destination && lhs.detail == rhs.detail
    }

    static func message(_ kind: Kind, endpoint: SSHEndpoint, detail: String, context: String?) -> String {
        let target = endpoint.description
        let user = endpoint.user ?? SSHEndpoint.localUserName
        let port = endpoint.port ?? 22
        let knownHosts = endpoint.knownHosts ?? "~/.ssh/known_hosts"
        let said = detail.isEmpty ? "" : "\nssh said: \(detail)"
        let what = context.map { "\($0): " } ?? ""
        switch kind {
        case .permissionDenied:
            let key = endpoint.identity.map { "the public key of \($0) (\($0).pub)" } ?? "your public key"
            return "\(what)ssh to \(target) was refused (permission denied): is \(key) in ~/.ssh/authorized_keys of user '\(user)' on \(endpoint.host), and is '\(user)' the right user? Try: ssh -p \(port)\(endpoint.identity.map { " -i \(SSHTransport.quote($0))" } ?? "") \(user)@\(endpoint.host) true\(said)"
        case .hostKeyVerificationFailed(changed: true):
            let entry = endpoint.port.map { "[\(endpoint.host)]:\($0)" } ?? endpoint.host
            return "\(what)ssh to \(target) failed host key verification: the host's key does NOT match the one recorded in \(knownHosts). Find out why (a reinstalled host, or someone in the middle) before trusting it; then remove the old entry with: ssh-keygen -f \(knownHosts) -R '\(entry)'\(said)"
        case .hostKeyVerificationFailed(changed: false):
            return "\(what)ssh to \(target) failed host key verification: the host's key is not in \(knownHosts). Check the host's fingerprint, then add it, e.g.: ssh-keyscan -p \(port) \(endpoint.host) >> \(knownHosts)\(said)"
        case .connectionRefused:
            return "\(what)ssh to \(target) failed: connection refused. Is sshd running on \(endpoint.host) and listening on port \(port), and is that the right port for this host?\(said)"
        case .connectTimedOut:
            return "\(what)ssh to \(target) timed out while connecting. Is \(endpoint.host) up, is the address right, and does a firewall let port \(port) through?\(said)"
        case .hostNotFound:
            return "\(what)ssh to \(target) failed: the host name '\(endpoint.host)' could not be resolved. Check its spelling in the target's hosts and your DNS.\(said)"
        case .unreachable:
            return "\(what)ssh to \(target) failed: no route to \(endpoint.host). Check the address and the network between here and there.\(said)"
        case .connectionClosed:
            return "\(what)ssh to \(target) failed: the host closed the connection before login finished (sshd limits such as MaxStartups, an access rule or a firewall?).\(said)"
        case .timedOut(let limit):
            return "\(what)ssh to \(target): did not finish within \(SSHError.format(limit)); ssh was killed (a remote command may still be running on the host).\(said)"
        case .commandFailed(let code):
            return "\(what)remote command on \(target) failed with exit code \(code)\(detail.isEmpty ? " (nothing on stderr)" : ":\n\(detail)")"
        case .copyFailed(let tool, let code):
            return "\(what)\(tool) to \(target) failed with exit code \(code)\(detail.isEmpty ? "" : ":\n\(detail)")"
        case .sshFailed(let code):
            return "\(what)ssh to \(target) failed (\(code < 0 ? "killed by signal \(-code)" : "exit code \(code)"))\(said)"
        case .invalidArgument:
            return "\(what)cannot use ssh target \(target): \(detail)"
        case .cannotStart:
            return "\(what)\(detail) — is the OpenSSH client (openssh-client, and rsync for uploads) installed?"
        }
    }

    /// Recognises ssh's own failure messages (never a remote program's, which ssh does not prefix this way).
    static func classify(stderr: String) -> Kind? {
        let lines = stderr.split(whereSeparator: \.isNewline)
        func has(_ text: String) -> Bool { lines.contains { $0.contains(text) } }
        if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            return .hostKeyVerificationFailed(changed: has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("has changed and you have requested strict checking"))
        }
        // ssh: "user@host: Permission denied (publickey,password)." — not "failed: Permission denied (13)".
        let denied = lines.contains { line in
            guard let range = line.range(of: "Permission denied (") else { return false }
            return line[range.upperBound...].first?.isLetter == true
        }
        if denied || has("Too many authentication failures") { return .permissionDenied }
        let connect = lines.filter { $0.hasPrefix("ssh: ") }
        func connectHas(_ text: String) -> Bool { connect.contains { $0.contains(text) } }
        if connectHas("Connection refused") { return .connectionRefused }
        if connectHas("Could not resolve hostname") { return .hostNotFound }
        if connectHas("Connection timed out") || connectHas("Operation timed out") || has("timed out during banner exchange") { return .connectTimedOut }
        if connectHas("No route to host") || connectHas("Network is unreachable") { return .unreachable }
        if has("kex_exchange_identification") || lines.contains(where: { $0.hasPrefix("Connection closed by") || $0.hasPrefix("Connection reset by") }) {
            return .connectionClosed
        }
        return nil
    }

    /// The last lines of a stream, for a message.
    static func tail(_ text: String, lines count: Int = 15, characters: Int = 2000) -> String {
        let lines = text.split(whereSeparator: \.isNewline).map(String.init)
            .filter { !$0.hasPrefix("Warning: Permanently added") }
        var joined = lines.suffix(count).joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        if joined.count > characters { joined = "…" + joined.suffix(characters) }
        return joined
    }

    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 { return "\(seconds) s" }
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}

// MARK: - Transport

/// Runs commands on hosts and copies directories to them with the OpenSSH client (`ssh`, `rsync -e ssh`,
/// or `scp -r`). Every program is started directly from an argument vector — nothing passes through a
/// local shell — in its own process group, waited for on a dedicated thread, and killed on timeout or
/// task cancellation.
public struct SSHTransport: Sendable {
    public enum CopyMethod: Sendable, Equatable {
        /// rsync when it is installed here and on the host, else scp.
        case automatic
        case rsync
        /// `scp -r` into a fresh directory that then replaces the destination.
        case scp
    }

    public var copyMethod: CopyMethod
    /// Absolute paths of the programs; nil when not found on PATH.
    public var sshPath: String?
    public var rsyncPath: String?
    public var scpPath: String?
    /// `ConnectTimeout`, in seconds.
    public var connectTimeout: Int = 10
    /// Most bytes kept of each of stdout and stderr.
    public var outputLimit: Int = 1 << 20

    public init(copyMethod: CopyMethod = .automatic, sshPath: String? = nil, rsyncPath: String? = nil, scpPath: String? = nil) {
        self.copyMethod = copyMethod
        self.sshPath = sshPath ?? SSHTransport.findExecutable("ssh")
        self.rsyncPath = rsyncPath ?? SSHTransport.findExecutable("rsync")
        self.scpPath = scpPath ?? SSHTransport.findExecutable("scp")
    }

    // MARK: Quoting

    /// Quotes a string for a POSIX shell: `it's` → `'it'\''s'`. Always quotes, so the result is one word
    /// with no expansion whatever the input.
    public static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The command sent to the host: `export K='v'; …` for each variable (sorted), then the command.
    static func remoteCommand(_ command: String, environment: [String: String]) throws(SSHError) -> String {
        var text = ""
        for key in environment.keys.sorted() {
            let value = environment[key] ?? ""
            guard isValidName(key) else {
                throw SSHError(.invalidArgument, endpoint: SSHEndpoint(host: "?"), detail: "'\(key)' is not a valid environment variable name")
            }
            guard !value.contains("\0") else {
                throw SSHError(.invalidArgument, endpoint: SSHEndpoint(host: "?"), detail: "the value of \(key) contains a NUL byte")
            }
            text += "export \(key)=\(quote(value)); "
        }
        return text + command
    }

    static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// A value for `ssh -o Name=value`: ssh splits it like a config line, so it is double-quoted, and `%`
    /// is doubled because ssh expands `%` tokens in file names.
    static func optionValue(_ path: String) -> String {
        let escaped = path.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "%", with: "%%")
        return "\"\(escaped)\""
    }

    /// One argument of rsync's `-e` string, which rsync splits itself: single quotes, `'` doubled inside.
    static func rsyncShellWord(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "''") + "'"
    }

    // MARK: Options

    /// The ssh options for an endpoint (no user, host or command). `portFlag` is `-P` for scp.
    public func sshOptions(for endpoint: SSHEndpoint, portFlag: String = "-p") -> [String] {
        var options = [
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=\(connectTimeout)",
            "-o", "ServerAliveInterval=5",
        ]
        if let port = endpoint.port { options += [portFlag, String(port)] }
        if let identity = endpoint.identity {
            options += ["-i", identity.replacingOccurrences(of: "%", with: "%%"), "-o", "IdentitiesOnly=yes"]
        }
        if let knownHosts = endpoint.knownHosts {
            options += ["-o", "UserKnownHostsFile=\(SSHTransport.optionValue(knownHosts))", "-o", "StrictHostKeyChecking=yes"]
        }
        return options
    }

    /// The full `ssh` argument vector (without argv[0]) that runs `remoteCommand` on the endpoint.
    func sshArguments(for endpoint: SSHEndpoint, remoteCommand: String) -> [String] {
        var arguments = sshOptions(for: endpoint) + ["-T"]
        if let user = endpoint.user { arguments += ["-l", user] }
        return arguments + ["--", endpoint.host, remoteCommand]
    }

    // MARK: Run

    /// Runs `command` with the host user's shell. Returns whatever the command exits with; throws only when
    /// ssh itself fails (refused, unknown host key, …), on timeout (ssh is killed) and on cancellation
    /// (`CancellationError`, ssh is killed). Call `requireSuccess()` on the result to treat a non-zero exit
    /// as an error.
    public func run(
        _ endpoint: SSHEndpoint,
        _ command: String,
        environment: [String: String] = [:],
        timeout: Duration = .seconds(60)
    ) async throws -> SSHResult {
        try endpoint.validate()
        let remote: String
        do {
            remote = try SSHTransport.remoteCommand(command, environment: environment)
        } catch {
            throw SSHError(.invalidArgument, endpoint: endpoint, detail: error.detail)
        }
        guard !remote.contains("\0") else {
            throw SSHError(.invalidArgument, endpoint: endpoint, detail: "the command contains a NUL byte")
        }
        let ssh = try program(sshPath, "ssh", endpoint)
        let outcome = try await SSHSubprocess.run(
            executable: ssh, arguments: sshArguments(for: endpoint, remoteCommand: remote),
            timeout: timeout, outputLimit: outputLimit, endpoint: endpoint)
        let stdout = String(decoding: outcome.stdout, as: UTF8.self)
        let stderr = String(decoding: outcome.stderr, as: UTF8.self)
        switch outcome.termination {
        case .timedOut:
            throw SSHError(.timedOut(timeout), endpoint: endpoint, detail: SSHError.tail(stderr))
        case .cancelled:
            throw CancellationError()
        case .signalled(let signal):
            throw SSHError(.sshFailed(exitCode: -signal), endpoint: endpoint, detail: SSHError.tail(stderr))
        case .exited(let code):
            if code == 255, let kind = SSHError.classify(stderr: stderr) {
                throw SSHError(kind, endpoint: endpoint, detail: SSHError.tail(stderr))
            }
            return SSHResult(exitCode: code, stdout: stdout, stderr: stderr,
                             stdoutTruncated: outcome.stdoutTruncated, stderrTruncated: outcome.stderrTruncated,
                             endpoint: endpoint)
        }
    }

    // MARK: Upload

    /// Makes `remoteDirectory` on the host and makes its contents those of the local `directory`: files
    /// missing locally are removed there. Idempotent. A relative remote path (or `~/…`) is relative to the
    /// remote user's home. With rsync only changed files are sent; with scp the whole tree is copied to a
    /// fresh sibling directory that then replaces the destination.
    public func upload(
        directory local: String,
        to endpoint: SSHEndpoint,
        remoteDirectory: String,
        timeout: Duration = .seconds(600)
    ) async throws {
        try endpoint.validate()
        let context = "uploading \(local) to \(endpoint):\(remoteDirectory)"
        var isDirectory: ObjCBool = false
        let localPath = URL(fileURLWithPath: local).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: localPath, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SSHError(.invalidArgument, endpoint: endpoint, detail: "the local directory \(local) does not exist", context: context)
        }
        let remote = try SSHTransport.remotePath(remoteDirectory, endpoint: endpoint)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        func remaining() -> Duration { max(.milliseconds(1), deadline - clock.now) }

        let wantsRsync: Bool = switch copyMethod {
        case .rsync: true
        case .scp: false
        case .automatic: rsyncPath != nil
        }
        if wantsRsync {
            // Makes the directory and, in automatic mode, asks whether the host has rsync — one connection.
            var prepare = "mkdir -p -- \(SSHTransport.quote(remote))"
            if copyMethod == .automatic {
                prepare += " && { if command -v rsync >/dev/null 2>&1; then echo slipway-rsync=yes; else echo slipway-rsync=no; fi; }"
            }
            let prepared = try await run(endpoint, prepare, timeout: remaining())
            do throws(SSHError) { try prepared.requireSuccess() } catch {
                throw SSHError(error.kind, endpoint: endpoint, detail: error.detail, context: "\(context): cannot create the remote directory")
            }
            if copyMethod == .rsync || prepared.stdout.contains("slipway-rsync=yes") {
                try await rsync(localPath, to: endpoint, remote: remote, timeout: remaining(), context: context)
                return
            }
        }
        try await scp(localPath, to: endpoint, remote: remote, deadline: deadline, context: context)
    }

    /// The remote directory as given to mkdir, rsync and scp alike: `~/x` → `x` (relative paths are
    /// relative to home for all three), trailing slashes dropped; `/`, `~`, `.` are refused because the
    /// upload replaces the directory's contents.
    static func remotePath(_ path: String, endpoint: SSHEndpoint) throws(SSHError) -> String {
        var value = path.trimmingCharacters(in: .whitespaces)
        if value == "~" { value = "." }
        if value.hasPrefix("~/") { value = String(value.dropFirst(2)) }
        while value.count > 1, value.hasSuffix("/") { value.removeLast() }
        while value.hasPrefix("./") { value = String(value.dropFirst(2)) }
        let components = value.split(separator: "/")
        if value.isEmpty || value.contains("\0") || components.allSatisfy({ $0 == "." }) || components.contains("..") {
            throw SSHError(.invalidArgument, endpoint: endpoint, detail: "the remote directory '\(path)' cannot be uploaded to (its contents are replaced; give a dedicated directory)")
        }
        return value
    }

    func rsync(_ local: String, to endpoint: SSHEndpoint, remote: String, timeout: Duration, context: String) async throws {
        let rsync = try program(rsyncPath, "rsync", endpoint)
        let ssh = try program(sshPath, "ssh", endpoint)
        let shell = ([ssh] + sshOptions(for: endpoint)).map(SSHTransport.rsyncShellWord).joined(separator: " ")
        let source = local.hasSuffix("/") ? local : local + "/"
        // --protect-args: the remote path reaches the remote rsync verbatim, not through the remote shell.
        let arguments = ["-a", "--delete", "--protect-args", "-e", shell, source, "\(endpoint.copyDestinationPrefix):\(remote)/"]
        try await copy(rsync, tool: "rsync", arguments: arguments, endpoint: endpoint, timeout: timeout, context: context)
    }

    func scp(_ local: String, to endpoint: SSHEndpoint, remote: String, deadline: ContinuousClock.Instant, context: String) async throws {
        let scp = try program(scpPath, "scp", endpoint)
        func remaining() -> Duration { max(.milliseconds(1), deadline - ContinuousClock.now) }
        let staging = "\(remote).slipway-upload-\(UInt32.random(in: 0...UInt32.max))"
        let quotedStaging = SSHTransport.quote(staging)
        // `mkdir -p` makes the destination's parents too; the staging directory then replaces the destination.
        let made = try await run(endpoint, "rm -rf -- \(quotedStaging) && mkdir -p -- \(quotedStaging)", timeout: remaining())
        do throws(SSHError) { try made.requireSuccess() } catch {
            throw SSHError(error.kind, endpoint: endpoint, detail: error.detail, context: "\(context): cannot create the remote directory")
        }
        do {
            let entries = try FileManager.default.contentsOfDirectory(atPath: local).sorted()
            if !entries.isEmpty {
                let base = local.hasSuffix("/") ? local : local + "/"
                let arguments = ["-r", "-p", "-q"] + sshOptions(for: endpoint, portFlag: "-P") + ["--"]
                    + entries.map { base + $0 } + ["\(endpoint.copyDestinationPrefix):\(staging)/"]
                try await copy(scp, tool: "scp", arguments: arguments, endpoint: endpoint, timeout: remaining(), context: context)
            }
            let quotedRemote = SSHTransport.quote(remote)
            try await run(endpoint, "rm -rf -- \(quotedRemote) && mv -- \(quotedStaging) \(quotedRemote)", timeout: remaining()).requireSuccess()
        } catch {
            // Not left behind, even when this task was cancelled (a fresh task is not).
            let transport = self
            await Task { _ = try? await transport.run(endpoint, "rm -rf -- \(quotedStaging)", timeout: .seconds(15)) }.value
            if let failure = error as? SSHError, case .commandFailed = failure.kind {
                throw SSHError(failure.kind, endpoint: endpoint, detail: failure.detail, context: context)
            }
            throw error
        }
    }

    func copy(_ executable: String, tool: String, arguments: [String], endpoint: SSHEndpoint, timeout: Duration, context: String) async throws {
        let outcome = try await SSHSubprocess.run(executable: executable, arguments: arguments, timeout: timeout, outputLimit: outputLimit, endpoint: endpoint)
        let stderr = String(decoding: outcome.stderr, as: UTF8.self)
        let detail = SSHError.tail(stderr)
        switch outcome.termination {
        case .exited(0):
            return
        case .timedOut:
            throw SSHError(.timedOut(timeout), endpoint: endpoint, detail: detail, context: context)
        case .cancelled:
            throw CancellationError()
        case .signalled(let signal):
            throw SSHError(.copyFailed(tool: tool, exitCode: -signal), endpoint: endpoint, detail: detail, context: context)
        case .exited(let code):
            if let kind = SSHError.classify(stderr: stderr) {
                throw SSHError(kind, endpoint: endpoint, detail: detail, context: context)
            }
            throw SSHError(.copyFailed(tool: tool, exitCode: code), endpoint: endpoint, detail: detail, context: context)
        }
    }

    func program(_ path: String?, _ name: String, _ endpoint: SSHEndpoint) throws(SSHError) -> String {
        guard let path else {
            throw SSHError(.cannotStart, endpoint: endpoint, detail: "\(name) was not found on PATH")
        }
        return path
    }

    /// The first executable `name` on PATH.
    public static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        for directory in ["/usr/bin", "/usr/local/bin", "/bin"] where access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        return nil
    }
}

// MARK: - Processes

/// Starts ssh, rsync or scp and collects their output without blocking the concurrency pool: a dedicated
/// thread reads the pipes, reaps the process and resumes the waiting task.
enum SSHSubprocess {
    enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
        case cancelled
    }

    struct Outcome: Sendable {
        var termination: Termination
        var stdout: [UInt8]
        var stderr: [UInt8]
        var stdoutTruncated: Bool
        var stderrTruncated: Bool
    }

    final class Control: Sendable {
        let cancelled = Mutex(false)
    }

    /// SIGTERM first; SIGKILL if the process group is still there after this.
    static let killGrace: Duration = .seconds(2)

    static func run(executable: String, arguments: [String], timeout: Duration?, outputLimit: Int, endpoint: SSHEndpoint) async throws -> Outcome {
        try Task.checkCancellation()
        let spawned: (pid: pid_t, stdout: Int32, stderr: Int32)
        do {
            spawned = try spawn(executable, arguments)
        } catch {
            throw SSHError(.cannotStart, endpoint: endpoint, detail: error.message)
        }
        let control = Control()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let thread = Thread {
                    continuation.resume(returning: collect(spawned, timeout: timeout, limit: outputLimit, control: control))
                }
                thread.name = "slipway-ssh"
                thread.stackSize = 256 * 1024
                thread.start()
            }
        } onCancel: {
            control.cancelled.withLock { $0 = true }
        }
    }

    static func collect(_ process: (pid: pid_t, stdout: Int32, stderr: Int32), timeout: Duration?, limit: Int, control: Control) -> Outcome {
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now + $0 }
        let bufferSize = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        var outputs: [[UInt8]] = [[], []]
        var truncated = [false, false]
        var fds = [pollfd(fd: process.stdout, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: process.stderr, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var status: Int32 = 0
        var exited = false
        var stopReason: Termination?
        var termSentAt: ContinuousClock.Instant?

        func closeStream(_ index: Int) {
            close(fds[index].fd)
            fds[index].fd = -1
            open -= 1
        }
        /// Reads once; false when nothing more is available now.
        func readOnce(_ index: Int) -> Bool {
            let count = read(fds[index].fd, buffer.baseAddress, bufferSize)
            if count > 0 {
                let room = limit - outputs[index].count
                if room > 0 {
                    outputs[index].append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<min(count, room)]))
                }
                if count > room { truncated[index] = true }
                return true
            }
            if count < 0, errno == EINTR { return true }
            if count < 0, errno == EAGAIN { return false }
            closeStream(index)
            return false
        }

        while true {
            if open > 0 {
                if poll(&fds, 2, 50) > 0 {
                    for index in 0..<2 where fds[index].fd >= 0 && fds[index].revents != 0 {
                        _ = readOnce(index)
                    }
                }
            } else if !exited {
                usleep(20_000)
            }
            if !exited, waitpid(process.pid, &status, WNOHANG) == process.pid { exited = true }
            if exited {
                // Whatever is left in the pipes; a descendant that keeps them open is not waited for.
                for index in 0..<2 where fds[index].fd >= 0 {
                    _ = fcntl(fds[index].fd, F_SETFL, fcntl(fds[index].fd, F_GETFL) | O_NONBLOCK)
                    while fds[index].fd >= 0, readOnce(index) {}
                    if fds[index].fd >= 0 { closeStream(index) }
                }
                break
            }
            let now = clock.now
            if termSentAt == nil {
                if let deadline, now >= deadline {
                    stopReason = .timedOut
                } else if control.cancelled.withLock({ $0 }) {
                    stopReason = .cancelled
                }
                if stopReason != nil {
                    termSentAt = now
                    _ = kill(-process.pid, SIGTERM)
                }
            } else if let sent = termSentAt, now - sent >= killGrace {
                _ = kill(-process.pid, SIGKILL)
            }
        }
        if stopReason != nil {
            // The group may hold more (rsync's ssh): make sure nothing of it is left.
            _ = kill(-process.pid, SIGKILL)
        }
        let termination: Termination
        if let stopReason {
            termination = stopReason
        } else if status & 0x7f == 0 {
            termination = .exited((status >> 8) & 0xff)
        } else {
            termination = .signalled(status & 0x7f)
        }
        return Outcome(termination: termination, stdout: outputs[0], stderr: outputs[1],
                       stdoutTruncated: truncated[0], stderrTruncated: truncated[1])
    }

    struct SpawnError: Error {
        var message: String
    }

    static func spawn(_ executable: String, _ arguments: [String]) throws(SpawnError) -> (pid: pid_t, stdout: Int32, stderr: Int32) {
        // Its own process group, so a timeout ends rsync and the ssh it started together.
        do {
            return try ProcessLauncher.spawnCapturing(executable: executable, arguments: arguments, environment: ProcessInfo.processInfo.environment, ownGroup: true)
        } catch {
            throw SpawnError(message: error.description)
        }
    }
}
