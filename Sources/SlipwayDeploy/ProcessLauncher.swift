#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSlipwaySystem
import Foundation

public struct ProcessLaunchError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Starts long-lived processes (service instances, the agent) with output appended to a log file, stdin from
/// /dev/null, default signal handling, and either their own process group (instances: the supervisor signals
/// the whole group) or their own session (the agent: it outlives the terminal that started it).
public enum ProcessLauncher {
    public static func spawn(executable: String, arguments: [String], environment: [String: String],
                             workingDirectory: String, logPath: String, newSession: Bool = false) throws(ProcessLaunchError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else is inherited: an agent or an instance that kept its parent's pipes open would make
        // whoever reads them (a CI runner, a test harness) wait for it forever.
        if slipway_spawn_addclosefrom(&actions, 3) != 0 { Self.markInheritedDescriptorsCloseOnExec() }
        slipway_spawn_addchdir(&actions, workingDirectory)

        // POSIX_SPAWN_SETSID is 0x80 in glibc (>= 2.26); Swift's Glibc module does not export it.
        let setsid: Int32 = 0x80
        return try launch(executable, arguments, environment, &actions, group: newSession ? setsid : Int32(POSIX_SPAWN_SETPGROUP))
    }

    /// Starts `executable` with stdin from /dev/null and stdout and stderr on two new pipes, default signal
    /// handling and nothing blocked; returns the pid and the pipes' read ends. `ownGroup`: in a process group
    /// of its own (a timeout then ends it and what it started). `closeInherited`: no descriptor above 2 is
    /// inherited, close-on-exec or not.
    public static func spawnCapturing(executable: String, arguments: [String], environment: [String: String],
                                      workingDirectory: String? = nil, ownGroup: Bool, closeInherited: Bool = false)
        throws(ProcessLaunchError) -> (pid: pid_t, stdout: Int32, stderr: Int32) {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard slipway_pipe_cloexec(&outPipe) == 0 else {
            throw ProcessLaunchError(description: "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        guard slipway_pipe_cloexec(&errPipe) == 0 else {
            let why = String(cString: strerror(errno))
            close(outPipe[0]); close(outPipe[1])
            throw ProcessLaunchError(description: "cannot create a pipe: \(why)")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        if closeInherited, slipway_spawn_addclosefrom(&actions, 3) != 0 { markInheritedDescriptorsCloseOnExec() }
        if let workingDirectory { slipway_spawn_addchdir(&actions, workingDirectory) }

        defer {
            close(outPipe[1])
            close(errPipe[1])
        }
        do {
            let pid = try launch(executable, arguments, environment, &actions, group: ownGroup ? Int32(POSIX_SPAWN_SETPGROUP) : 0)
            return (pid, outPipe[0], errPipe[0])
        } catch {
            close(outPipe[0]); close(errPipe[0])
            throw error
        }
    }

    /// posix_spawn with default signal handling, nothing blocked, and `group` (POSIX_SPAWN_SETPGROUP for a
    /// process group of its own, SETSID for a session, 0 for neither).
    private static func launch(_ executable: String, _ arguments: [String], _ environment: [String: String],
                               _ actions: inout posix_spawn_file_actions_t, group: Int32) throws(ProcessLaunchError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(group | Int32(POSIX_SPAWN_SETSIGDEF) | Int32(POSIX_SPAWN_SETSIGMASK)))
        if group == Int32(POSIX_SPAWN_SETPGROUP) { posix_spawnattr_setpgroup(&attributes, 0) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw ProcessLaunchError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Fallback without closefrom: every open descriptor above 2 becomes close-on-exec.
    static func markInheritedDescriptorsCloseOnExec() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for entry in entries {
            guard let fd = Int32(entry), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// True while `pid` exists (a zombie counts until reaped).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        // A zombie has exited; it only waits for its parent to reap it.
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0, let close = buffer[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return true }
        return buffer[close + 2] != UInt8(ascii: "Z")
    }

    /// The value of `name` in the environment `pid` was started with (Linux /proc), to recognise our own processes.
    public static func environmentValue(of pid: pid_t, _ name: String) -> String? {
        let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while bytes.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        let prefix = Array((name + "=").utf8)
        for entry in bytes.split(separator: 0) where entry.starts(with: prefix) {
            return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
        }
        return nil
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    public static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return nil }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
