#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
@testable import SlipwayDeploy

public struct SSHDFixtureError: Error, CustomStringConvertible {
    public var description: String
}

/// A real OpenSSH server for one test: its own host key, a client key in its authorized_keys, a
/// known_hosts line for it, listening on a free port of a loopback address. Works as root (the tests here)
/// and as any other user, who can then log in as themself only.
public struct SSHDFixture: Sendable {
    /// The fixture's temporary directory; uploads in tests go under it too.
    public let directory: String
    public let address: String
    public let port: Int
    public let pid: pid_t
    /// The local user, whom sshd lets in with the client key.
    public let user: String
    /// The client's private key (in a directory whose name has a space, to test quoting).
    public let clientKey: String
    /// A known_hosts file with exactly this server's host key.
    public let knownHosts: String
    /// `[address]:port ssh-ed25519 AAAA…`
    public let knownHostsLine: String
    public let log: String
    /// sshd puts this in the environment of every session, so `stop()` can find what sessions left behind.
    public let marker: String

    public static let sshd = "/usr/sbin/sshd"
    public static let keygen = SSHTransport.findExecutable("ssh-keygen") ?? "/usr/bin/ssh-keygen"

    /// Runs `body` with `count` servers, one per address, all accepting the same client key, and stops them
    /// afterwards whatever happens.
    public static func with<T: Sendable>(
        addresses: [String] = ["127.0.0.1"],
        privateDirectories: [(source: String, mountPoint: String)] = [],
        _ body: ([SSHDFixture]) async throws -> T
    ) async throws -> T {
        var servers: [SSHDFixture] = []
        do {
            var sharedKey: String?
            for (index, address) in addresses.enumerated() {
                let server = try await start(address: address, clientKey: sharedKey,
                                             privateDirectory: index < privateDirectories.count ? privateDirectories[index] : nil)
                servers.append(server)
                sharedKey = server.clientKey
            }
            let result = try await body(servers)
            for server in servers { await server.stop() }
            return result
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
    }

    public static func with<T: Sendable>(_ body: (SSHDFixture) async throws -> T) async throws -> T {
        try await with(addresses: ["127.0.0.1"]) { try await body($0[0]) }
    }

    /// The endpoint that reaches this server with the client key and strict host key checking.
    public var endpoint: SSHEndpoint {
        SSHEndpoint(host: address, user: user, port: port, identity: clientKey, knownHosts: knownHosts)
    }

    /// `privateDirectory`: (source, mountPoint) — sshd and its sessions run in their own mount namespace where
    /// `mountPoint` is `source`, so two fixtures see different contents at the same path, like two machines.
    public static func start(address: String, clientKey sharedKey: String? = nil, privateDirectory: (source: String, mountPoint: String)? = nil) async throws -> SSHDFixture {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("slipway-sshd-\(UUID().uuidString.prefix(8))").path
        let clientDirectory = directory + "/client keys"
        try FileManager.default.createDirectory(atPath: clientDirectory, withIntermediateDirectories: true)
        do {
            try await tool(keygen, ["-q", "-t", "ed25519", "-N", "", "-C", "slipway-test-host", "-f", directory + "/host_key"])
            let clientKey: String
            if let sharedKey {
                clientKey = sharedKey
            } else {
                clientKey = clientDirectory + "/id_ed25519"
                try await tool(keygen, ["-q", "-t", "ed25519", "-N", "", "-C", "slipway-test-client", "-f", clientKey])
            }
            try FileManager.default.copyItem(atPath: clientKey + ".pub", toPath: directory + "/authorized_keys")
            let hostKey = try String(contentsOfFile: directory + "/host_key.pub", encoding: .utf8)
                .split(separator: " ").prefix(2).joined(separator: " ")
            if geteuid() == 0, !FileManager.default.fileExists(atPath: "/run/sshd") {
                // sshd as root wants its privilege separation directory.
                try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            }
            let marker = UUID().uuidString
            let user = localUser()
            var lastLog = ""
            // A port found free can be taken before sshd binds it: try a few.
            for _ in 0..<3 {
                let port = try freePort(address: address)
                let log = directory + "/sshd-\(port).log"
                let config = directory + "/sshd_config"
                try """
                Port \(port)
                ListenAddress \(address)
                HostKey \(directory)/host_key
                AuthorizedKeysFile \(directory)/authorized_keys
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin prohibit-password
                StrictModes no
                UsePAM no
                PidFile \(directory)/sshd.pid
                Subsystem sftp internal-sftp
                SetEnv SLIPWAY_SSHD_FIXTURE=\(marker)
                PrintMotd no
                PrintLastLog no
                MaxStartups 100
                LogLevel VERBOSE

                """.write(toFile: config, atomically: true, encoding: .utf8)
                let pid: pid_t
                if let privateDirectory {
                    pid = try spawn("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", #"mount --bind "$1" "$2" && exec "$3" -D -e -f "$4""#,
                                                         "sh", privateDirectory.source, privateDirectory.mountPoint, sshd, config], log: log)
                } else {
                    pid = try spawn(sshd, ["-D", "-e", "-f", config], log: log)
                }
                if try await waitUntilListening(address: address, port: port, pid: pid) {
                    let line = "[\(address)]:\(port) \(hostKey)"
                    let knownHosts = clientDirectory + "/known_hosts-\(port)"
                    try (line + "\n").write(toFile: knownHosts, atomically: true, encoding: .utf8)
                    return SSHDFixture(directory: directory, address: address, port: port, pid: pid, user: user,
                                       clientKey: clientKey, knownHosts: knownHosts, knownHostsLine: line, log: log, marker: marker)
                }
                await terminate(pid)
                lastLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            }
            throw SSHDFixtureError(description: "sshd did not start on \(address):\n\(lastLog)")
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Stops sshd (SIGTERM, then waits), kills whatever its sessions left running (a remote `sleep` whose
    /// ssh client was killed), and removes the directory.
    public func stop() async {
        await SSHDFixture.terminate(pid)
        for pid in SSHDFixture.processes(withEnvironment: "SLIPWAY_SSHD_FIXTURE=\(marker)") {
            _ = kill(pid, SIGKILL)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    // MARK: Helpers

    public static func localUser() -> String {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return "root"
    }

    /// Runs a tool to completion; throws with its stderr when it fails.
    public static func tool(_ executable: String, _ arguments: [String]) async throws {
        let outcome = try await SSHSubprocess.run(executable: executable, arguments: arguments, timeout: .seconds(20),
                                                  outputLimit: 1 << 16, endpoint: SSHEndpoint(host: "localhost"))
        guard outcome.termination == .exited(0) else {
            throw SSHDFixtureError(description: "\(executable) \(arguments) failed: \(outcome.termination) \(String(decoding: outcome.stderr, as: UTF8.self))")
        }
    }

    /// Starts a long-running process with stdout and stderr appended to `log`.
    public static func spawn(_ executable: String, _ arguments: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard result == 0 else {
            throw SSHDFixtureError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// SIGTERM, up to 3 s to exit, then SIGKILL; always reaps.
    public static func terminate(_ pid: pid_t) async {
        _ = kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<150 {
            if waitpid(pid, &status, WNOHANG) != 0 { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
        _ = kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
    }

    /// Until the port accepts a connection (true), sshd exits (false), or 10 s pass (false).
    public static func waitUntilListening(address: String, port: Int, pid: pid_t) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if canConnect(address: address, port: port) { return true }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { return false }
            try await Task.sleep(for: .milliseconds(25))
        }
        return false
    }

    public static func socketAddress(_ address: String, port: Int) -> sockaddr_in {
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = inet_pton(AF_INET, address, &socketAddress.sin_addr)
        return socketAddress
    }

    public static func canConnect(address: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var target = socketAddress(address, port: port)
        return withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A port nothing listens on right now (bound to 0, read back, closed).
    public static func freePort(address: String = "127.0.0.1") throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SSHDFixtureError(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bound = socketAddress(address, port: 0)
        let result = withUnsafePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw SSHDFixtureError(description: "bind \(address): \(String(cString: strerror(errno)))") }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: actual.sin_port))
    }

    /// Processes whose environment holds exactly `entry` (found through /proc).
    public static func processes(withEnvironment entry: String) -> [pid_t] {
        let wanted = Array(entry.utf8)
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name), pid != me,
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
            return environment.split(separator: 0).contains { $0.elementsEqual(wanted) } ? pid : nil
        }
    }
}
