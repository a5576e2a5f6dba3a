#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

// The `haproxy` traffic provider: Slipway drives an existing HAProxy through its runtime API (the "stats socket"
// of haproxy.cfg, `level admin`) instead of running its own router. One command per connection (HAProxy's
// non-interactive mode): connect, send "command\n", read the answer until HAProxy closes the connection.

/// What went wrong talking to HAProxy's runtime API. Every message says what to check.
public enum HAProxyRuntimeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Nothing answered at the address (no socket file, connection refused, permission denied…).
    case cannotConnect(address: String, reason: String)
    /// Connected, but no complete answer in time.
    case timedOut(address: String, command: String, timeout: Duration)
    /// HAProxy answered with an error, e.g. "No such server." (its message, verbatim).
    case commandFailed(command: String, message: String)
    /// A command Slipway refuses to send (empty, or several lines).
    case invalidCommand(String)
    /// An argument outside what HAProxy accepts (a weight above 256, a server name with a space…).
    case invalidArgument(String)
    /// An answer Slipway cannot read (e.g. `show stat` without its CSV header).
    case unexpectedAnswer(command: String, answer: String)
    /// The name is not a backend of this HAProxy (e.g. it is a frontend).
    case noSuchBackend(String)
    /// `setWeights` named servers the backend does not have; nothing was changed.
    case unknownServers(backend: String, names: [String], known: [String])
    /// The answer was larger than `HAProxyRuntime.maxAnswerBytes`.
    case answerTooLarge(command: String, limit: Int)

    public var description: String {
        switch self {
        case .cannotConnect(let address, let reason):
            let socket = HAProxyRuntime.Endpoint(address).statsSocketSetting
            return "cannot connect to HAProxy's runtime API at \(address): \(reason) — is HAProxy running, and is "
                + "`stats socket \(socket) level admin` in the global section of haproxy.cfg?"
        case .timedOut(let address, let command, let timeout):
            return "HAProxy's runtime API at \(address) did not answer `\(command)` within \(Self.format(timeout)) "
                + "— is HAProxy overloaded or stuck, or is something else listening at \(address)?"
        case .commandFailed(let command, let message):
            var text = "HAProxy rejected `\(command)`: \(message)"
            if message.hasPrefix("Permission denied") {
                text += " — the stats socket needs `level admin` in haproxy.cfg"
            } else if message.hasPrefix("Unknown command") {
                text += " — is this HAProxy too old for the command, or the socket below `level admin`?"
            }
            return text
        case .invalidCommand(let command):
            return "not a single HAProxy runtime command: \(command.debugDescription) (one line, not empty)"
        case .invalidArgument(let why):
            return why
        case .unexpectedAnswer(let command, let answer) where answer.isEmpty:
            return "HAProxy closed the connection without answering `\(command)`"
        case .unexpectedAnswer(let command, let answer):
            return "unexpected answer from HAProxy to `\(command)`: \(String(answer.prefix(200)).debugDescription)"
        case .noSuchBackend(let name):
            return "HAProxy has no backend named \(name) — check the backend sections of haproxy.cfg"
        case .unknownServers(let backend, let names, let known):
            let list = known.isEmpty ? "none" : known.joined(separator: ", ")
            return "backend \(backend) has no server named \(names.joined(separator: ", ")) (its servers: \(list)); "
                + "no weight was changed"
        case .answerTooLarge(let command, let limit):
            return "HAProxy's answer to `\(command)` is larger than \(limit) bytes"
        }
    }

    private static func format(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }
}

/// The administrative state Slipway can put a server in (`set server B/S state …`).
public enum HAProxyServerState: String, Sendable, Equatable, CaseIterable {
    /// Takes traffic again (leaves drain or maintenance).
    case ready
    /// No new connections except persistent ones; existing ones finish.
    case drain
    /// Maintenance: no traffic at all, health checks stop.
    case maint
}

/// A server's status as `show stat` reports it ("UP", "DOWN 1/2", "MAINT (via b/s)", "no check"…).
public enum HAProxyServerStatus: Sendable, Equatable {
    case up
    case down
    case maint
    case drain
    /// Up, but its health check keeps it out of load balancing (e.g. `http-check disable-on-404`).
    case noLB
    /// No health check configured; HAProxy assumes it is up.
    case noCheck
    case other(String)

    public init(_ text: String) {
        let word = text.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
        switch word {
        case "UP": self = .up
        case "DOWN": self = .down
        case "MAINT": self = .maint
        case "DRAIN": self = .drain
        case "NOLB": self = .noLB
        case "no" where text == "no check": self = .noCheck
        default: self = .other(text)
        }
    }
}

/// Cumulative counters of one server (or of a whole backend) since HAProxy started.
public struct HAProxyCounters: Sendable, Equatable {
    /// `stot`: sessions (in HTTP mode: requests) sent to the server.
    public var sessions: Int
    /// `hrsp_1xx` … `hrsp_5xx`, `hrsp_other`: responses the server sent, by class.
    public var responses1xx: Int
    public var responses2xx: Int
    public var responses3xx: Int
    public var responses4xx: Int
    public var responses5xx: Int
    public var responsesOther: Int
    /// `econ`: connections to the server that failed (the client got a 503 from HAProxy).
    public var connectionErrors: Int
    /// `eresp`: responses that failed — server closed or timed out (the client got a 502/504 from HAProxy).
    public var responseErrors: Int

    public static let zero = HAProxyCounters()

    public init(sessions: Int = 0, responses1xx: Int = 0, responses2xx: Int = 0, responses3xx: Int = 0,
                responses4xx: Int = 0, responses5xx: Int = 0, responsesOther: Int = 0,
                connectionErrors: Int = 0, responseErrors: Int = 0) {
        self.sessions = sessions
        self.responses1xx = responses1xx
        self.responses2xx = responses2xx
        self.responses3xx = responses3xx
        self.responses4xx = responses4xx
        self.responses5xx = responses5xx
        self.responsesOther = responsesOther
        self.connectionErrors = connectionErrors
        self.responseErrors = responseErrors
    }

    /// Requests sent to the server: `stot`.
    public var requests: Int { self.sessions }

    /// Failed requests: 5xx answers of the server plus the 503/502/504 HAProxy generated because the server could
    /// not be reached or did not answer. HAProxy counts those only in `econ`/`eresp`, not in the server's `hrsp_5xx`.
    public var errors: Int { Self.sum(Self.sum(responses5xx, connectionErrors), responseErrors) }

    /// The most a parsed counter holds (2⁵³): HAProxy's are 64-bit, and sums over many servers must not overflow.
    public static let limit = 1 << 53

    /// Saturating arithmetic: counters come from another process, and an overflow would trap.
    static func sum(_ a: Int, _ b: Int) -> Int {
        let (value, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? .max : .min) : value
    }

    static func difference(_ a: Int, _ b: Int) -> Int {
        let (value, overflow) = a.subtractingReportingOverflow(b)
        return overflow ? (b < 0 ? .max : .min) : value
    }

    private var all: [Int] {
        [sessions, responses1xx, responses2xx, responses3xx, responses4xx, responses5xx, responsesOther,
         connectionErrors, responseErrors]
    }

    /// What happened between `earlier` and `self`. If any counter went backwards HAProxy restarted (or reloaded
    /// without keeping its counters) in between, and everything since counts from zero: the result is `self`.
    public func since(_ earlier: HAProxyCounters) -> HAProxyCounters {
        if zip(self.all, earlier.all).contains(where: { $0 < $1 }) { return self }
        let d = Self.difference
        return HAProxyCounters(
            sessions: d(sessions, earlier.sessions),
            responses1xx: d(responses1xx, earlier.responses1xx),
            responses2xx: d(responses2xx, earlier.responses2xx),
            responses3xx: d(responses3xx, earlier.responses3xx),
            responses4xx: d(responses4xx, earlier.responses4xx),
            responses5xx: d(responses5xx, earlier.responses5xx),
            responsesOther: d(responsesOther, earlier.responsesOther),
            connectionErrors: d(connectionErrors, earlier.connectionErrors),
            responseErrors: d(responseErrors, earlier.responseErrors)
        )
    }

    /// Requests and errors of a group of servers (e.g. those running the canary) between two snapshots of their
    /// backend. A server missing from `earlier` counts from zero; one missing from `later` contributes nothing.
    /// A server's errors never exceed its requests.
    public static func delta(from earlier: HAProxyStats, to later: HAProxyStats, servers: some Sequence<String>)
        -> (requests: Int, errors: Int)
    {
        var requests = 0
        var errors = 0
        for name in Set(servers) {
            guard let now = later[server: name]?.counters else { continue }
            let change = now.since(earlier[server: name]?.counters ?? .zero)
            requests = sum(requests, change.requests)
            errors = sum(errors, min(change.errors, change.requests))
        }
        return (requests, errors)
    }
}

/// One server of a backend, from `show stat`.
public struct HAProxyServer: Sendable, Equatable {
    public var backend: String
    public var name: String
    public var status: HAProxyServerStatus
    /// The `status` column verbatim.
    public var statusText: String
    /// Effective weight (`weight`); can be lower than the configured one during slow start.
    public var weight: Int
    /// The weight set in the configuration or by `set server … weight` (`uweight`), if this HAProxy reports it.
    public var userWeight: Int?
    /// `addr`: "host:port", if reported.
    public var address: String?
    /// `scur`: sessions in progress right now (wait for 0 after a drain).
    public var currentSessions: Int
    /// `qcur`: requests queued for the server right now.
    public var queued: Int
    public var counters: HAProxyCounters
    /// Averages over the last 1024 requests, in milliseconds: `qtime` (queue), `ctime` (connect),
    /// `rtime` (response headers), `ttime` (whole session).
    public var queueTime: Int
    public var connectTime: Int
    public var responseTime: Int
    public var totalTime: Int

    /// Total sessions (`stot`).
    public var sessions: Int { self.counters.sessions }

    /// Would HAProxy send it new requests: up (or unchecked) with a weight above 0.
    public var takesNewTraffic: Bool {
        (self.status == .up || self.status == .noCheck) && self.weight > 0
    }

    public init(backend: String, name: String, statusText: String, weight: Int, userWeight: Int? = nil,
                address: String? = nil, currentSessions: Int = 0, queued: Int = 0, counters: HAProxyCounters = .zero,
                queueTime: Int = 0, connectTime: Int = 0, responseTime: Int = 0, totalTime: Int = 0) {
        self.backend = backend
        self.name = name
        self.status = HAProxyServerStatus(statusText)
        self.statusText = statusText
        self.weight = weight
        self.userWeight = userWeight
        self.address = address
        self.currentSessions = currentSessions
        self.queued = queued
        self.counters = counters
        self.queueTime = queueTime
        self.connectTime = connectTime
        self.responseTime = responseTime
        self.totalTime = totalTime
    }
}

/// A snapshot of one backend's `show stat` rows.
public struct HAProxyStats: Sendable, Equatable {
    public var backend: String
    /// In the order of haproxy.cfg.
    public var servers: [HAProxyServer]
    /// The backend's own row (`BACKEND`): everything the backend handled, including requests no server got.
    public var totals: HAProxyCounters

    public init(backend: String, servers: [HAProxyServer], totals: HAProxyCounters) {
        self.backend = backend
        self.servers = servers
        self.totals = totals
    }

    public subscript(server name: String) -> HAProxyServer? {
        self.servers.first { $0.name == name }
    }

    /// Parses `show stat` CSV (header line "# pxname,svname,…"), by column name, keeping the rows of `backend`.
    /// Throws `noSuchBackend` when the CSV has no `BACKEND` row for it.
    public static func parse(_ csv: String, backend: String) throws -> HAProxyStats {
        let table = try HAProxyStatTable(csv)
        var servers: [HAProxyServer] = []
        var totals: HAProxyCounters?
        for row in table.rows where row.text("pxname") == backend {
            switch row.text("svname") {
            case "BACKEND": totals = row.counters
            case "FRONTEND": continue
            default: servers.append(row.server)
            }
        }
        guard let totals else { throw HAProxyRuntimeError.noSuchBackend(backend) }
        return HAProxyStats(backend: backend, servers: servers, totals: totals)
    }
}

/// `show stat` CSV: a header naming the columns, one row per frontend, backend and server.
struct HAProxyStatTable: Sendable {
    struct Row: Sendable {
        let columns: [String: Int]
        let fields: [String]

        func text(_ column: String) -> String {
            guard let index = columns[column], index < fields.count else { return "" }
            return fields[index]
        }

        func number(_ column: String) -> Int { optionalNumber(column) ?? 0 }
        /// Counters and gauges are never negative and at most `HAProxyCounters.limit`, whatever the CSV says.
        func optionalNumber(_ column: String) -> Int? {
            let text = text(column)
            if let value = Int(text) { return min(max(value, 0), HAProxyCounters.limit) }
            // Too many digits for an Int: as large as a counter gets.
            if !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return HAProxyCounters.limit }
            return nil
        }

        var counters: HAProxyCounters {
            HAProxyCounters(
                sessions: number("stot"),
                responses1xx: number("hrsp_1xx"), responses2xx: number("hrsp_2xx"), responses3xx: number("hrsp_3xx"),
                responses4xx: number("hrsp_4xx"), responses5xx: number("hrsp_5xx"),
                responsesOther: number("hrsp_other"),
                connectionErrors: number("econ"), responseErrors: number("eresp")
            )
        }

        var server: HAProxyServer {
            let address = text("addr")
            return HAProxyServer(
                backend: text("pxname"), name: text("svname"), statusText: text("status"),
                weight: number("weight"), userWeight: optionalNumber("uweight"),
                address: address.isEmpty ? nil : address,
                currentSessions: number("scur"), queued: number("qcur"), counters: counters,
                queueTime: number("qtime"), connectTime: number("ctime"),
                responseTime: number("rtime"), totalTime: number("ttime")
            )
        }
    }

    let rows: [Row]

    init(_ csv: String) throws {
        var lines = csv.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" })[...]
        guard let header = lines.popFirst(), header.hasPrefix("#") else {
            throw HAProxyRuntimeError.unexpectedAnswer(command: "show stat", answer: csv)
        }
        let names = Self.fields(header.dropFirst().drop(while: { $0 == " " }))
        var columns: [String: Int] = [:]
        for (index, name) in names.enumerated() where columns[name] == nil {
            columns[name] = index
        }
        guard columns["pxname"] != nil, columns["svname"] != nil else {
            throw HAProxyRuntimeError.unexpectedAnswer(command: "show stat", answer: csv)
        }
        self.rows = lines.map { Row(columns: columns, fields: Self.fields($0)) }
    }

    /// Splits one CSV line; HAProxy quotes a field (doubling inner quotes) when it holds a comma or a quote.
    static func fields(_ line: Substring) -> [String] {
        var fields: [String] = []
        var field = ""
        var quoted = false
        var iterator = line.makeIterator()
        while let character = iterator.next() {
            if quoted {
                if character == "\"" {
                    // A doubled quote is a literal quote; a single one ends the quoted part.
                    var lookahead = iterator
                    if lookahead.next() == "\"" {
                        field.append("\"")
                        iterator = lookahead
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(character)
                }
            } else if character == "\"" {
                quoted = true
            } else if character == "," {
                fields.append(field)
                field = ""
            } else {
                field.append(character)
            }
        }
        fields.append(field)
        return fields
    }
}

/// A client of HAProxy's runtime API (the `stats socket` of haproxy.cfg, which must be at `level admin` to change
/// weights and states).
public struct HAProxyRuntime: Sendable {
    /// Where the runtime API listens.
    public enum Endpoint: Sendable, Equatable {
        case unix(path: String)
        case tcp(host: String, port: Int)

        /// "127.0.0.1:9999", "[::1]:9999", "ipv4@127.0.0.1:9999" and "localhost:9999" are TCP; "unix@/path" and
        /// anything else (e.g. "/run/haproxy/admin.sock") is the path of a unix socket.
        public init(_ address: String) {
            var rest = Substring(address)
            if rest.hasPrefix("unix@") {
                self = .unix(path: String(rest.dropFirst("unix@".count)))
                return
            }
            for prefix in ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"] where rest.hasPrefix(prefix) {
                rest = rest.dropFirst(prefix.count)
            }
            if !rest.hasPrefix("/"), !rest.hasPrefix("."), let colon = rest.lastIndex(of: ":"),
               let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) {
                var host = rest[..<colon]
                if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
                if !host.isEmpty, !host.contains("/") {
                    self = .tcp(host: String(host), port: port)
                    return
                }
            }
            self = .unix(path: address)
        }

        /// The `stats socket` setting of haproxy.cfg for this endpoint.
        var statsSocketSetting: String {
            switch self {
            case .unix(let path): path
            case .tcp(let host, let port): host.contains(":") ? "ipv6@[\(host)]:\(port)" : "ipv4@\(host):\(port)"
            }
        }
    }

    /// The address as given.
    public let address: String
    public let endpoint: Endpoint
    /// For the whole exchange of one command: connect, send, read the answer.
    public var timeout: Duration
    /// Answers larger than this are refused.
    public var maxAnswerBytes: Int
    let group: any EventLoopGroup

    public init(_ address: String, timeout: Duration = .seconds(2), maxAnswerBytes: Int = 32 << 20,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.address = address
        self.endpoint = Endpoint(address)
        self.timeout = timeout
        self.maxAnswerBytes = maxAnswerBytes
        self.group = group
    }

    /// Sends one command and returns HAProxy's answer verbatim. An answer that is one of HAProxy's error messages
    /// ("No such server.", "Unknown command…", "Require 'backend/server'.", "Permission denied"…) is thrown as
    /// `commandFailed` with that message. Several commands separated by ";" are HAProxy's business: its answers are
    /// concatenated and only the first is checked.
    public func execute(_ command: String) async throws -> String {
        let answer = try await self.exchange(command)
        if Self.looksLikeError(answer) {
            throw HAProxyRuntimeError.commandFailed(command: command, message: Self.message(answer))
        }
        return answer
    }

    /// `set server B/S weight N`, N in 0...256 (0: no new requests).
    public func setWeight(backend: String, server: String, weight: Int) async throws {
        try Self.validate(backend: backend, server: server)
        guard (0...256).contains(weight) else {
            throw HAProxyRuntimeError.invalidArgument("an HAProxy server weight is 0...256, not \(weight) (\(backend)/\(server))")
        }
        try await self.silent("set server \(backend)/\(server) weight \(weight)")
    }

    /// Sets the weights of several servers of one backend. Checks first that the backend has all of them (nothing is
    /// changed otherwise), then raises weights before lowering others, so the backend is never left with all its
    /// servers at 0 in between. Stops at the first command HAProxy rejects; the changes before it stay.
    public func setWeights(backend: String, _ weights: [String: Int]) async throws {
        for (server, weight) in weights {
            try Self.validate(backend: backend, server: server)
            guard (0...256).contains(weight) else {
                throw HAProxyRuntimeError.invalidArgument("an HAProxy server weight is 0...256, not \(weight) (\(backend)/\(server))")
            }
        }
        guard !weights.isEmpty else { return }
        let current = try await self.stats(backend: backend)
        let known = current.servers.map(\.name)
        let unknown = weights.keys.filter { !known.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw HAProxyRuntimeError.unknownServers(backend: backend, names: unknown, known: known)
        }
        let changes = weights.sorted { a, b in
            let raiseA = a.value >= (current[server: a.key]?.userWeight ?? current[server: a.key]?.weight ?? 0)
            let raiseB = b.value >= (current[server: b.key]?.userWeight ?? current[server: b.key]?.weight ?? 0)
            return raiseA != raiseB ? raiseA : a.key < b.key
        }
        for (server, weight) in changes {
            try await self.silent("set server \(backend)/\(server) weight \(weight)")
        }
    }

    /// `set server B/S state ready|drain|maint`.
    public func setState(backend: String, server: String, state: HAProxyServerState) async throws {
        try Self.validate(backend: backend, server: server)
        try await self.silent("set server \(backend)/\(server) state \(state.rawValue)")
    }

    /// The servers of a backend with their status, weight, counters and timings.
    public func servers(backend: String) async throws -> [HAProxyServer] {
        try await self.stats(backend: backend).servers
    }

    /// A snapshot of a backend: its servers and its own totals (`show stat <backend> 6 -1`).
    public func stats(backend: String) async throws -> HAProxyStats {
        try Self.validate(name: backend, what: "backend")
        let command = "show stat \(backend) 6 -1"
        let answer = try await self.exchange(command)
        guard answer.hasPrefix("#") else {
            if answer.isEmpty {
                throw HAProxyRuntimeError.unexpectedAnswer(command: command, answer: answer)
            }
            if Self.looksLikeError(answer) || !answer.contains(",") {
                throw HAProxyRuntimeError.commandFailed(command: command, message: Self.message(answer))
            }
            throw HAProxyRuntimeError.unexpectedAnswer(command: command, answer: answer)
        }
        return try HAProxyStats.parse(answer, backend: backend)
    }

    // MARK: - Internals

    /// Runs a command whose success is an empty answer (the `set` commands); any text is HAProxy's error. HAProxy ends
    /// every answer with an empty line, so no byte at all means the command was not processed.
    private func silent(_ command: String) async throws {
        let answer = try await self.exchange(command)
        if answer.isEmpty {
            throw HAProxyRuntimeError.unexpectedAnswer(command: command, answer: answer)
        }
        let message = Self.message(answer)
        if !message.isEmpty {
            throw HAProxyRuntimeError.commandFailed(command: command, message: message)
        }
    }

    static let errorPrefixes = [
        "No such", "Unknown command", "Unknown ", "Require ", "Permission denied", "Missing ", "Invalid ",
        "Absolute weight", "Relative weight", "Empty weight", "Trailing garbage", "Backend is using a static",
        "'set server", "Can't ", "Cannot ", "Failed", "Error", "Usage:", "Unexpected ", "Expects ",
    ]

    static func looksLikeError(_ answer: String) -> Bool {
        errorPrefixes.contains { answer.hasPrefix($0) }
    }

    /// The answer without surrounding blank lines; for "Unknown command" only its first line (HAProxy appends help).
    static func message(_ answer: String) -> String {
        let trimmed = answer.trimmingWhitespace()
        if trimmed.hasPrefix("Unknown command"), let newline = trimmed.firstIndex(of: "\n") {
            return String(trimmed[..<newline]).trimmingWhitespace()
        }
        return trimmed
    }

    static func validate(backend: String, server: String) throws {
        try validate(name: backend, what: "backend")
        try validate(name: server, what: "server")
    }

    /// Names go into a command line: no spaces, "/", ";" (HAProxy's command separator), "#" or control characters.
    static func validate(name: String, what: String) throws {
        let bad = name.isEmpty || name.unicodeScalars.contains {
            $0.properties.isWhitespace || $0.value < 0x20 || $0 == "/" || $0 == ";" || $0 == "#" || $0 == "\\"
        }
        if bad {
            throw HAProxyRuntimeError.invalidArgument("not an HAProxy \(what) name: \(name.debugDescription)")
        }
    }

    /// Connect, send one line, read until HAProxy closes; all within `timeout`.
    func exchange(_ command: String) async throws -> String {
        guard !command.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }),
              !command.trimmingWhitespace().isEmpty else {
            throw HAProxyRuntimeError.invalidCommand(command)
        }
        let nanos = max(1, self.timeout.components.seconds * 1_000_000_000 + self.timeout.components.attoseconds / 1_000_000_000)
        let deadline = NIODeadline.now() + .nanoseconds(nanos)
        let eventLoop = self.group.next()
        let promise = eventLoop.makePromise(of: [UInt8].self)
        let limit = self.maxAnswerBytes
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(nanos))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AnswerCollector(promise: promise, limit: limit))
                }
            }
        let channel: any Channel
        do {
            switch self.endpoint {
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            case .tcp(let host, let port):
                if let ip = try? SocketAddress(ipAddress: host, port: port) {
                    channel = try await bootstrap.connect(to: ip).get()
                } else {
                    channel = try await bootstrap.connect(host: host, port: port).get()
                }
            }
        } catch {
            promise.fail(error)
            if case ChannelError.connectTimeout = error {
                throw HAProxyRuntimeError.timedOut(address: self.address, command: command, timeout: self.timeout)
            }
            throw HAProxyRuntimeError.cannotConnect(address: self.address, reason: Self.reason(error))
        }
        let timeoutTask = eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(HAProxyRuntimeError.timedOut(address: self.address, command: command, timeout: self.timeout))
            channel.close(promise: nil)
        }
        defer {
            timeoutTask.cancel()
            channel.close(promise: nil)
        }
        channel.writeAndFlush(ByteBuffer(string: command + "\n"), promise: nil)
        let bytes: [UInt8]
        do {
            bytes = try await promise.futureResult.get()
        } catch AnswerCollector.Failure.tooLarge {
            throw HAProxyRuntimeError.answerTooLarge(command: command, limit: limit)
        } catch let error as HAProxyRuntimeError {
            throw error
        } catch {
            throw HAProxyRuntimeError.unexpectedAnswer(command: command, answer: "connection failed: \(error)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A connect failure in words.
    static func reason(_ error: any Error) -> String {
        var error = error
        if let connection = error as? NIOConnectionError, let first = connection.connectionErrors.first?.error {
            error = first
        }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ENOENT: return "no such socket file"
            case ECONNREFUSED: return "connection refused (nothing listening)"
            case EACCES, EPERM: return "permission denied (check the socket's mode/user/group in haproxy.cfg)"
            case ENOTSOCK: return "not a socket"
            default: return "\(String(cString: strerror(io.errnoCode))) (errno \(io.errnoCode))"
            }
        }
        if case SocketAddressError.unixDomainSocketPathTooLong = error {
            return "the socket path is too long for a unix socket"
        }
        return "\(error)"
    }
}

/// Collects the answer until HAProxy closes the connection.
private final class AnswerCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    enum Failure: Error { case tooLarge }

    private let promise: EventLoopPromise<[UInt8]>
    private let limit: Int
    private var bytes: [UInt8] = []

    init(promise: EventLoopPromise<[UInt8]>, limit: Int) {
        self.promise = promise
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        guard self.bytes.count + buffer.readableBytes <= self.limit else {
            self.promise.fail(Failure.tooLarge)
            context.close(promise: nil)
            return
        }
        self.bytes.append(contentsOf: buffer.readableBytesView)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // HAProxy closes after its answer. (If the promise already failed — timeout, too large — this is a no-op.)
        self.promise.succeed(self.bytes)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
        context.close(promise: nil)
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        let scalars = self.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }
}
