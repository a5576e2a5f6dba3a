import Foundation
import NIOCore
import NIOPosix

public struct AgentClientError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Talks to the agent of a data directory over its Unix socket (one JSON line each way), and starts the agent
/// (a detached `slipway agent` process in its own session) when none answers.
public struct AgentClient: Sendable {
    public let paths: AgentPaths
    public let dataDirectory: String

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
        self.paths = AgentPaths(dataDirectory: dataDirectory)
    }

    public func send(_ request: AgentRequest, timeout: Duration = .seconds(90)) async throws -> AgentResponse {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .connect(unixDomainSocketPath: paths.socket) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw AgentClientError("no agent answers on \(paths.socket): \(error)")
        }
        var data = try JSONEncoder().encode(request)
        data.append(0x0A)
        let payload = data
        return try await withThrowingTaskGroup(of: AgentResponse.self) { group in
            group.addTask {
                try await channel.executeThenClose { input, output in
                    try await output.write(ByteBuffer(bytes: payload))
                    for try await line in input {
                        return try JSONDecoder().decode(AgentResponse.self, from: Data(line.readableBytesView))
                    }
                    throw AgentClientError("the agent closed the connection without answering (see \(paths.log))")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw AgentClientError("the agent did not answer within \(timeout) (see \(paths.log))")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    /// The running agent's process id, nil when no agent answers.
    public func runningPID() async -> Int32? {
        if case .pong(let pid, _) = try? await send(.ping, timeout: .seconds(2)) { return pid }
        return nil
    }

    /// Waits, at most `timeout`, until process `pid` has exited. After `down` of the last environment the
    /// agent exits; waiting for it means no Slipway process is left when `down` returns. Only looks at the
    /// process (never at the agent's lock, which an agent starting meanwhile must be able to take).
    public static func waitUntilExited(pid: Int32, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !ProcessLauncher.isAlive(pid) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// True when an agent answers.
    public func isRunning() async -> Bool {
        await runningPID() != nil
    }

    /// Starts `executable agent --data-dir …` detached unless an agent answers; waits until it does.
    public func ensureRunning(executable: String) async throws {
        if await isRunning() { return }
        try FileManager.default.createDirectory(atPath: paths.root, withIntermediateDirectories: true)
        var environment = ProcessInfo.processInfo.environment
        environment["SLIPWAY_AGENT"] = "1"
        do {
            _ = try ProcessLauncher.spawn(executable: executable, arguments: ["agent", "--data-dir", dataDirectory],
                                          environment: environment, workingDirectory: "/", logPath: paths.log, newSession: true)
        } catch {
            throw AgentClientError("cannot start the agent: \(error.description)")
        }
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if await isRunning() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw AgentClientError("the agent did not start within 15 s; its log: \(paths.log)")
    }

    public func call(_ request: AgentRequest) async throws -> AgentResponse {
        let response = try await send(request)
        if case .error(let message) = response { throw AgentClientError(message) }
        return response
    }

    public func status() async throws -> [EnvironmentStatus] {
        guard case .status(let environments) = try await call(.status) else { throw AgentClientError("unexpected answer to status") }
        return environments
    }

    public func window(environment: String, version: String, since: Double) async throws -> AgentWindow {
        guard case .window(let window) = try await call(.window(environment: environment, version: version, since: since)) else {
            throw AgentClientError("unexpected answer to window")
        }
        return window
    }
}
