import Foundation
import SlipwayCore
import Testing
@testable import SlipwayDeploy
import SlipwayTestSupport

/// Pure parts: endpoint parsing, quoting, options, error recognition. No sshd needed.
@Suite struct SSHTransportUnitTests {
    static func target(hosts: [String] = [], user: String? = "deploy", port: Int? = 2200, identity: String? = "/keys/id") -> SSHTarget {
        SSHTarget(hosts: hosts, user: user, port: port, identity: identity, directory: "/srv/app",
                  start: "./start", stop: "./stop", appPort: 8080, health: HealthCheck())
    }

    @Test func endpointsFromTargetHosts() {
        let target = Self.target()
        #expect(SSHEndpoint(target: target, host: "web1") == SSHEndpoint(host: "web1", user: "deploy", port: 2200, identity: "/keys/id"))
        #expect(SSHEndpoint(target: target, host: "web1:22") == SSHEndpoint(host: "web1", user: "deploy", port: 22, identity: "/keys/id"))
        #expect(SSHEndpoint(target: target, host: "ops@web2:2022", knownHosts: "/kh") == SSHEndpoint(host: "web2", user: "ops", port: 2022, identity: "/keys/id", knownHosts: "/kh"))
        #expect(SSHEndpoint(target: target, host: "ops@web3") == SSHEndpoint(host: "web3", user: "ops", port: 2200, identity: "/keys/id"))
        #expect(SSHEndpoint(target: target, host: "[::1]:2222").host == "::1")
        #expect(SSHEndpoint(target: target, host: "[::1]:2222").port == 2222)
        #expect(SSHEndpoint(target: target, host: "fe80::1").host == "fe80::1")
        #expect(SSHEndpoint(target: target, host: "fe80::1").port == 2200)
        let plain = SSHEndpoint(target: Self.target(user: nil, port: nil, identity: nil), host: " 10.0.0.5 ")
        #expect(plain == SSHEndpoint(host: "10.0.0.5"))
        #expect(SSHEndpoint(host: "web1", user: "ops", port: 2022).description == "ops@web1:2022")
        #expect(SSHEndpoint(host: "::1", user: "ops").description == "ops@[::1]:22")
    }

    @Test func quotingIsOneInertShellWord() {
        #expect(SSHTransport.quote("plain") == "'plain'")
        #expect(SSHTransport.quote("") == "''")
        #expect(SSHTransport.quote("it's") == "'it'\\''s'")
        #expect(SSHTransport.quote("$HOME `id` \"x\"") == "'$HOME `id` \"x\"'")
        let command = try? SSHTransport.remoteCommand("env", environment: ["B": "two words", "A": "it's"])
        #expect(command == "export A='it'\\''s'; export B='two words'; env")
        #expect(throws: SSHError.self) { try SSHTransport.remoteCommand("env", environment: ["BAD NAME": "x"]) }
        #expect(throws: SSHError.self) { try SSHTransport.remoteCommand("env", environment: ["1X": "x"]) }
        #expect(SSHTransport.rsyncShellWord("a b'c") == "'a b''c'")
        #expect(SSHTransport.optionValue("/a b/k\"h%") == "\"/a b/k\\\"h%%\"")
    }

    @Test func sshOptionsFollowTheEndpoint() {
        let transport = SSHTransport()
        let bare = transport.sshOptions(for: SSHEndpoint(host: "web1"))
        #expect(bare == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"])
        let full = SSHEndpoint(host: "web1", user: "ops", port: 2022, identity: "/k/id", knownHosts: "/k/known hosts")
        let arguments = transport.sshArguments(for: full, remoteCommand: "uptime")
        #expect(arguments == [
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
            "-p", "2022", "-i", "/k/id", "-o", "IdentitiesOnly=yes",
            "-o", "UserKnownHostsFile=\"/k/known hosts\"", "-o", "StrictHostKeyChecking=yes",
            "-T", "-l", "ops", "--", "web1", "uptime",
        ])
        #expect(transport.sshOptions(for: full, portFlag: "-P").contains("-P"))
    }

    @Test func recognisesSSHFailures() {
        #expect(SSHError.classify(stderr: "deploy@web1: Permission denied (publickey).\n") == .permissionDenied)
        #expect(SSHError.classify(stderr: "rsync: [receiver] mkstemp \"/x\" failed: Permission denied (13)\n") == nil)
        #expect(SSHError.classify(stderr: "No ED25519 host key is known for [h]:22 and you have requested strict checking.\nHost key verification failed.\n") == .hostKeyVerificationFailed(changed: false))
        #expect(SSHError.classify(stderr: "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed.\n") == .hostKeyVerificationFailed(changed: true))
        #expect(SSHError.classify(stderr: "ssh: connect to host 10.0.0.1 port 22: Connection refused\n") == .connectionRefused)
        #expect(SSHError.classify(stderr: "ssh: connect to host 10.0.0.1 port 22: Connection timed out\n") == .connectTimedOut)
        #expect(SSHError.classify(stderr: "ssh: Could not resolve hostname nope: Name or service not known\n") == .hostNotFound)
        #expect(SSHError.classify(stderr: "ssh: connect to host 10.0.0.1 port 22: No route to host\n") == .unreachable)
        #expect(SSHError.classify(stderr: "kex_exchange_identification: read: Connection reset by peer\n") == .connectionClosed)
        #expect(SSHError.classify(stderr: "curl: (7) Failed to connect: Connection refused\n") == nil)
    }

    @Test func refusesDangerousRemoteDirectoriesAndBadEndpoints() async throws {
        let endpoint = SSHEndpoint(host: "web1")
        #expect(try SSHTransport.remotePath("~/apps/1.0/", endpoint: endpoint) == "apps/1.0")
        #expect(try SSHTransport.remotePath("/srv/app/1.0", endpoint: endpoint) == "/srv/app/1.0")
        for path in ["/", "~", "~/", ".", "./", "", "/srv/../etc"] {
            #expect(throws: SSHError.self, "\(path)") { try SSHTransport.remotePath(path, endpoint: endpoint) }
        }
        let missing = try await #require(throws: SSHError.self) {
            try await SSHTransport().upload(directory: "/nonexistent/slipway", to: endpoint, remoteDirectory: "/srv/app")
        }
        #expect(missing.kind == .invalidArgument)
        #expect(missing.description.contains("/nonexistent/slipway does not exist"))
        for bad in [SSHEndpoint(host: "-oProxyCommand=x"), SSHEndpoint(host: "a b"), SSHEndpoint(host: ""),
                    SSHEndpoint(host: "web1", user: "-x"), SSHEndpoint(host: "web1", port: 70000)] {
            await #expect(throws: SSHError.self) { try await SSHTransport().run(bad, "true") }
        }
    }
}

/// Against real sshd servers on loopback, one per test (so the tests can run in parallel).
@Suite(.timeLimit(.minutes(1))) struct SSHTransportTests {
    @Test func runsCommandsAndReportsExitCodes() async throws {
        try await SSHDFixture.with { server in
            let transport = SSHTransport()
            let ok = try await transport.run(server.endpoint, "printf 'hello\\n'; echo \"user=$(id -un)\"")
            #expect(ok.exitCode == 0)
            #expect(ok.stdout == "hello\nuser=\(server.user)\n")
            #expect(try ok.requireSuccess() == ok)

            let failed = try await transport.run(server.endpoint, "echo partial; echo 'disk is full' >&2; exit 7")
            #expect(failed.exitCode == 7)
            #expect(failed.stdout == "partial\n")
            #expect(failed.stderr.contains("disk is full"))
            let error = try #require(throws: SSHError.self) { try failed.requireSuccess() }
            #expect(error.kind == .commandFailed(exitCode: 7))
            #expect(error.description.contains("exit code 7"))
            #expect(error.description.contains("disk is full"))
            #expect(error.description.contains("\(server.user)@127.0.0.1:\(server.port)"))
        }
    }

    @Test func passesEnvironmentValuesVerbatim() async throws {
        try await SSHDFixture.with { server in
            let values = [
                "QUOTES": #"it's "quoted" \ too"#,
                "SPACES": "  two  spaces  ",
                "DOLLAR": "$HOME $(echo no) `echo no` ${X:-y} *",
                "NEWLINE": "line1\nline2",
                "EMPTY": "",
            ]
            let keys = values.keys.sorted()
            let command = "printf '%s\\0' " + keys.map { "\"$\($0)\"" }.joined(separator: " ")
            let result = try await SSHTransport().run(server.endpoint, command, environment: values)
            try result.requireSuccess()
            let received = result.stdout.split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init)
            #expect(received == keys.map { values[$0]! })
        }
    }

    @Test func capsOutputAtOneMegabyte() async throws {
        try await SSHDFixture.with { server in
            let result = try await SSHTransport().run(server.endpoint, "head -c 1500000 /dev/zero | tr '\\0' a; echo done >&2")
            #expect(result.exitCode == 0)
            #expect(result.stdout.utf8.count == 1 << 20)
            #expect(result.stdoutTruncated)
            #expect(result.stderr == "done\n")
            #expect(!result.stderrTruncated)
        }
    }

    /// Live processes one of whose arguments contains `text`.
    static func processes(withArgumentContaining text: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  let status = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  !status.contains(") Z ") else { return nil }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return arguments.contains { $0.contains(text) } ? pid : nil
        }
    }

    static func makeTree(_ root: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/bin/nested deeper", withIntermediateDirectories: true)
        try "#!/bin/sh\necho start\n".write(toFile: root + "/bin/start", atomically: true, encoding: .utf8)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root + "/bin/start")
        try "deep\n".write(toFile: root + "/bin/nested deeper/file.txt", atomically: true, encoding: .utf8)
        try "spaces\n".write(toFile: root + "/file with spaces.txt", atomically: true, encoding: .utf8)
        try "old\n".write(toFile: root + "/obsolete.txt", atomically: true, encoding: .utf8)
        try "hidden\n".write(toFile: root + "/.env", atomically: true, encoding: .utf8)
    }

    /// Relative path → contents ("<dir>" for directories), of everything under `root`.
    static func snapshot(_ root: String) throws -> [String: String] {
        var files: [String: String] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: root + "/" + path, isDirectory: &isDirectory)
            files[path] = isDirectory.boolValue ? "<dir>" : try String(contentsOfFile: root + "/" + path, encoding: .utf8)
        }
        return files
    }

    /// Upload, upload again after deleting and changing local files, upload a third time unchanged.
    func checkUploads(_ transport: SSHTransport, second: SSHTransport? = nil) async throws {
        try await SSHDFixture.with { server in
            let local = server.directory + "/release"
            // A remote path with a space and a quote, below a directory that does not exist yet.
            let remote = server.directory + "/remote/app's releases/1.0 beta"
            try Self.makeTree(local)
            try await transport.upload(directory: local, to: server.endpoint, remoteDirectory: remote)
            #expect(try Self.snapshot(remote) == Self.snapshot(local))
            #expect(try Self.snapshot(remote)["file with spaces.txt"] == "spaces\n")
            #expect(FileManager.default.isExecutableFile(atPath: remote + "/bin/start"))

            try FileManager.default.removeItem(atPath: local + "/obsolete.txt")
            try "new\n".write(toFile: local + "/bin/nested deeper/file.txt", atomically: true, encoding: .utf8)
            try await (second ?? transport).upload(directory: local, to: server.endpoint, remoteDirectory: remote)
            #expect(!FileManager.default.fileExists(atPath: remote + "/obsolete.txt"))
            #expect(try Self.snapshot(remote) == Self.snapshot(local))

            try await transport.upload(directory: local, to: server.endpoint, remoteDirectory: remote)
            #expect(try Self.snapshot(remote) == Self.snapshot(local))
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: server.directory + "/remote/app's releases")
            #expect(leftovers == ["1.0 beta"])

            // A destination that cannot be made says so, with the remote error.
            try "".write(toFile: server.directory + "/blocker", atomically: true, encoding: .utf8)
            let error = try await #require(throws: SSHError.self) {
                try await transport.upload(directory: local, to: server.endpoint, remoteDirectory: server.directory + "/blocker/app")
            }
            #expect(error.kind == .commandFailed(exitCode: 1))
            #expect(error.description.contains("cannot create the remote directory"))
            #expect(error.description.contains("Not a directory"))
        }
    }

    @Test func uploadsWithRsyncAndDeletesRemovedFiles() async throws {
        try await checkUploads(SSHTransport(copyMethod: .rsync))
    }

    @Test func uploadsWithScpFallback() async throws {
        // Forced scp, then automatic with no local rsync (which must fall back to scp).
        var noRsync = SSHTransport(copyMethod: .automatic)
        noRsync.rsyncPath = nil
        try await checkUploads(SSHTransport(copyMethod: .scp), second: noRsync)
    }

    @Test func wrongKeyIsPermissionDenied() async throws {
        try await SSHDFixture.with { server in
            let wrongKey = server.directory + "/client keys/wrong"
            try await SSHDFixture.tool(SSHDFixture.keygen, ["-q", "-t", "ed25519", "-N", "", "-f", wrongKey])
            var endpoint = server.endpoint
            endpoint.identity = wrongKey
            let error = try await #require(throws: SSHError.self) { try await SSHTransport().run(endpoint, "true") }
            #expect(error.kind == .permissionDenied)
            #expect(error.description.contains("ssh to \(server.user)@127.0.0.1:\(server.port) was refused (permission denied)"))
            #expect(error.description.contains("authorized_keys"))
            // Uploads report the same cause.
            let upload = try await #require(throws: SSHError.self) {
                try await SSHTransport().upload(directory: server.directory, to: endpoint, remoteDirectory: server.directory + "/x")
            }
            #expect(upload.kind == .permissionDenied)
        }
    }

    @Test func unknownOrChangedHostKeyIsRefused() async throws {
        try await SSHDFixture.with { server in
            let empty = server.directory + "/client keys/empty_known_hosts"
            try "".write(toFile: empty, atomically: true, encoding: .utf8)
            var endpoint = server.endpoint
            endpoint.knownHosts = empty
            let unknown = try await #require(throws: SSHError.self) { try await SSHTransport().run(endpoint, "true") }
            #expect(unknown.kind == .hostKeyVerificationFailed(changed: false))
            #expect(unknown.description.contains("host key verification"))
            #expect(unknown.description.contains("ssh-keyscan -p \(server.port) 127.0.0.1 >> \(empty)"))

            // The client's own public key recorded as the host's: a changed key.
            let wrong = server.directory + "/client keys/wrong_known_hosts"
            let clientKey = try String(contentsOfFile: server.clientKey + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
            try "[127.0.0.1]:\(server.port) \(clientKey)\n".write(toFile: wrong, atomically: true, encoding: .utf8)
            endpoint.knownHosts = wrong
            let changed = try await #require(throws: SSHError.self) { try await SSHTransport().run(endpoint, "true") }
            #expect(changed.kind == .hostKeyVerificationFailed(changed: true))
            #expect(changed.description.contains("does NOT match"))
        }
    }

    @Test func closedPortIsConnectionRefused() async throws {
        let port = try SSHDFixture.freePort()
        let endpoint = SSHEndpoint(host: "127.0.0.1", user: "nobody", port: port)
        let error = try await #require(throws: SSHError.self) { try await SSHTransport().run(endpoint, "true") }
        #expect(error.kind == .connectionRefused)
        #expect(error.description.contains("connection refused"))
        #expect(error.description.contains("port \(port)"))
    }

    @Test func timeoutAndCancellationKillSSH() async throws {
        try await SSHDFixture.with { server in
            let transport = SSHTransport()
            let clock = ContinuousClock()
            let started = clock.now
            let error = try await #require(throws: SSHError.self) {
                try await transport.run(server.endpoint, "sleep 30", timeout: .milliseconds(2500))
            }
            #expect(error.kind == .timedOut(.milliseconds(2500)))
            #expect(error.description.contains("did not finish within 2500 ms"))
            #expect(clock.now - started < .seconds(6))

            let cancelledAt = clock.now
            let task = Task { try await transport.run(server.endpoint, "sleep 30") }
            try await Task.sleep(for: .milliseconds(800))
            task.cancel()
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(clock.now - cancelledAt < .seconds(5))
            // No ssh of this test is left running (its argv names this server's known_hosts file).
            #expect(Self.processes(withArgumentContaining: server.knownHosts).isEmpty)
        }
    }

    @Test func reachesSeveralHostsOfOneTarget() async throws {
        try await SSHDFixture.with(addresses: ["127.0.0.1", "127.0.0.2"]) { servers in
            let (a, b) = (servers[0], servers[1])
            #expect(a.clientKey == b.clientKey)
            // One known_hosts for the fleet, one target whose host entries carry their ports (and a user).
            let knownHosts = a.directory + "/client keys/fleet_known_hosts"
            try (a.knownHostsLine + "\n" + b.knownHostsLine + "\n").write(toFile: knownHosts, atomically: true, encoding: .utf8)
            let target = SSHTarget(hosts: ["127.0.0.1:\(a.port)", "\(b.user)@127.0.0.2:\(b.port)"], user: a.user, port: 1,
                                   identity: a.clientKey, directory: a.directory + "/srv", start: "true", stop: "true",
                                   appPort: 8080, health: HealthCheck())
            let endpoints = target.hosts.map { SSHEndpoint(target: target, host: $0, knownHosts: knownHosts) }
            #expect(endpoints.map(\.port) == [a.port, b.port])

            let transport = SSHTransport()
            let answers = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for (index, endpoint) in endpoints.enumerated() {
                    group.addTask {
                        let result = try await transport.run(endpoint, "echo \"$SSH_CONNECTION\"", environment: ["HOST_INDEX": "\(index)"])
                        return (index, try result.requireSuccess().stdout)
                    }
                }
                var answers: [Int: String] = [:]
                for try await (index, stdout) in group { answers[index] = stdout }
                return answers
            }
            // SSH_CONNECTION: client address, client port, server address, server port.
            #expect(answers[0]?.hasSuffix(" 127.0.0.1 \(a.port)\n") == true)
            #expect(answers[1]?.hasSuffix(" 127.0.0.2 \(b.port)\n") == true)

            let local = a.directory + "/release"
            try Self.makeTree(local)
            for (index, endpoint) in endpoints.enumerated() {
                try await transport.upload(directory: local, to: endpoint, remoteDirectory: target.directory + "/host\(index)/1.0")
            }
            for index in endpoints.indices {
                #expect(try Self.snapshot(target.directory + "/host\(index)/1.0") == Self.snapshot(local))
            }
        }
    }
}
