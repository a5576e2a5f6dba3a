import Foundation
import Hummingbird
import Synchronization
import SlipwayCore
import SlipwayEngine
import SlipwayStore

/// The request context: who is calling, once `TokenAuthenticator` has looked at the bearer token.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var token: TokenRecord?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.token = nil
    }

    /// Webhook payloads are at most 25 MB at GitHub; API bodies are small.
    public var maxUploadSize: Int { 25 * 1024 * 1024 }
}

/// What the routes share.
public struct ServerServices: Sendable {
    public let store: ServerStore
    public let layout: ServerLayout
    public let dispatcher: RunDispatcher
    public let broker: RunnerBroker
    /// The server's environment, where webhook secrets are read from (by the variable a project names).
    public let environment: [String: String]

    /// HTTP requests answered, by method and status (for /metrics).
    public let requestCounts = RequestCounter()

    public init(store: ServerStore, layout: ServerLayout, dispatcher: RunDispatcher, broker: RunnerBroker, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.store = store
        self.layout = layout
        self.dispatcher = dispatcher
        self.broker = broker
        self.environment = environment
    }
}

/// Every route, with the role it needs. `routeRoles` is the single source for both the router and
/// the role × route test.
public enum ServerRoutes {
    public struct Route: Sendable {
        public var method: HTTPRequest.Method
        public var path: String
        /// nil: no token needed (health, the API description; webhooks verify signatures instead).
        public var role: TokenRole?
        public var summary: String
        /// Statuses the route answers with, besides 401/403 for auth.
        public var statuses: [Int]
        /// Query parameters it reads.
        public var query: [String] = []
        /// Response media type.
        public var produces = "application/json"
        /// Whether it reads a JSON body.
        public var body = false
        /// Request headers it requires (webhooks).
        public var headers: [String] = []
    }

    static let githubHeaders = ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256"]
    static let giteaHeaders = ["X-Gitea-Event", "X-Gitea-Delivery", "X-Gitea-Signature"]
    /// Methods answered with 405 (and `Allow`) on a known path that does not take them.
    static let otherMethods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete, .options, .trace, HTTPRequest.Method("QUERY")!]

    public static let all: [Route] = [
        Route(method: .get, path: "/health", role: nil, summary: "Liveness, queue depth and runs in progress", statuses: [200]),
        Route(method: .get, path: "/openapi.json", role: nil, summary: "This API description (OpenAPI 3.1)", statuses: [200]),
        Route(method: .post, path: "/hooks/github", role: nil, summary: "GitHub webhook (push, pull_request, ping), HMAC-SHA256 signed",
              statuses: [200, 202, 400, 401, 404, 413], query: ["project"], body: true, headers: githubHeaders),
        Route(method: .post, path: "/hooks/gitea", role: nil, summary: "Gitea webhook (push, pull_request), HMAC-SHA256 signed",
              statuses: [200, 202, 400, 401, 404, 413], query: ["project"], body: true, headers: giteaHeaders),
        Route(method: .get, path: "/api/projects", role: .viewer, summary: "Projects", statuses: [200]),
        Route(method: .get, path: "/api/projects/{project}", role: .viewer, summary: "One project", statuses: [200, 404]),
        Route(method: .get, path: "/api/projects/{project}/requests", role: .viewer, summary: "Run requests of a project, newest first",
              statuses: [200, 404], query: ["limit"]),
        Route(method: .post, path: "/api/projects/{project}/requests", role: .developer,
              summary: "Queue a run: {branch?, tag?, commit?, event? (default manual), inputs?}", statuses: [202, 400, 404], body: true),
        Route(method: .get, path: "/api/requests/{id}", role: .viewer, summary: "One run request (status, run number, reason)", statuses: [200, 404]),
        Route(method: .post, path: "/api/requests/{id}/cancel", role: .developer, summary: "Cancel a queued or running request", statuses: [202, 404, 409]),
        Route(method: .get, path: "/api/projects/{project}/runs", role: .viewer, summary: "Runs of a project, newest first", statuses: [200, 404], query: ["limit"]),
        Route(method: .get, path: "/api/projects/{project}/runs/{number}", role: .viewer, summary: "One run with its jobs", statuses: [200, 404]),
        Route(method: .get, path: "/api/projects/{project}/runs/{number}/logs", role: .viewer,
              summary: "Step logs of a run (or of ?job=KEY) as text; with ?follow=1 as Server-Sent Events (`log` per line, `end` with the status)",
              statuses: [200, 404], query: ["job", "follow"], produces: "text/plain"),
        Route(method: .get, path: "/api/projects/{project}/runs/{number}/artifacts", role: .viewer,
              summary: "Artifacts a run's jobs kept: [{job, files, bytes}]", statuses: [200, 404]),
        Route(method: .get, path: "/api/projects/{project}/runs/{number}/artifacts/{job}", role: .viewer,
              summary: "One job's artifacts as a tar archive", statuses: [200, 404], produces: "application/x-tar"),
        Route(method: .get, path: "/api/projects/{project}/environments", role: .viewer,
              summary: "Environments (`slipway status`): instances, traffic, metrics and the latest rollout of each", statuses: [200, 404], query: ["environment"]),
        Route(method: .get, path: "/api/projects/{project}/explain/{subject}", role: .viewer,
              summary: "Why a job ran, was skipped, failed, hit or missed the cache; or how an environment's rollout went (`slipway explain`)",
              statuses: [200, 400, 404], query: ["run", "rollout"]),
        Route(method: .get, path: "/api/runners", role: .viewer, summary: "Remote runners (labels, capacity, leases, last heartbeat) and jobs waiting for one", statuses: [200]),
        Route(method: .post, path: "/api/runner/lease", role: .runner,
              summary: "Long poll for a job: {name, labels, capacity?, wait? (s)}; 200 with an assignment, 204 when none came", statuses: [200, 204, 400], body: true),
        Route(method: .post, path: "/api/runner/heartbeat", role: .runner,
              summary: "A runner is alive: {name, labels, capacity?, leases}; answers the leases to cancel and those to drop", statuses: [200, 400], body: true),
        Route(method: .get, path: "/api/runner/leases/{lease}/source", role: .runner, summary: "The run's source as a tar archive",
              statuses: [200, 404, 409], produces: "application/x-tar", headers: ["Slipway-Runner"]),
        Route(method: .get, path: "/api/runner/leases/{lease}/upstream/{index}", role: .runner, summary: "Artifacts of the index-th needed job as a tar archive",
              statuses: [200, 404, 409], produces: "application/x-tar", headers: ["Slipway-Runner"]),
        Route(method: .post, path: "/api/runner/leases/{lease}/progress", role: .runner, summary: "Step records and log chunks of a leased attempt",
              statuses: [200, 400, 404, 409], body: true, headers: ["Slipway-Runner"]),
        Route(method: .put, path: "/api/runner/leases/{lease}/artifacts", role: .runner, summary: "The attempt's artifacts as a tar archive",
              statuses: [200, 400, 404, 409], headers: ["Slipway-Runner"]),
        Route(method: .post, path: "/api/runner/leases/{lease}/complete", role: .runner, summary: "How the attempt ended: {status, failure?, outputs, tests}",
              statuses: [200, 400, 404, 409], body: true, headers: ["Slipway-Runner"]),
        Route(method: .get, path: "/api/tokens", role: .admin, summary: "API tokens (names and roles only)", statuses: [200]),
        Route(method: .get, path: "/metrics", role: .viewer, summary: "Prometheus metrics", statuses: [200], produces: "text/plain"),
    ]

    /// The OpenAPI 3.1 document, built from `all` so it cannot drift from the router.
    public static func openAPIDocument() -> [String: Any] {
        var paths: [String: [String: Any]] = [:]
        for route in all {
            var operation: [String: Any] = ["summary": route.summary]
            var parameters: [[String: Any]] = []
            for name in route.path.split(separator: "/") where name.hasPrefix("{") {
                let bare = String(name.dropFirst().dropLast())
                let type: [String: Any] = bare == "project" ? ["type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"] : ["type": "integer", "minimum": bare == "index" ? 0 : 1]
                parameters.append(["name": bare, "in": "path", "required": true, "schema": type])
            }
            for name in route.query {
                let schema: [String: Any] = name == "limit" ? ["type": "integer", "minimum": 1, "maximum": 500] : ["type": "string"]
                parameters.append(["name": name, "in": "query", "required": false, "schema": schema])
            }
            for name in route.headers {
                // Without a delivery id the body's digest identifies the delivery: that header is optional.
                // A runner's name makes a lease route refuse other runners; without it the lease id alone decides.
                parameters.append(["name": name, "in": "header", "required": !name.hasSuffix("-Delivery") && name != "Slipway-Runner", "schema": ["type": "string", "minLength": 1]])
            }
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if route.body {
                // A webhook always carries its JSON payload; the API's bodies are optional.
                operation["requestBody"] = ["required": !route.headers.isEmpty, "content": ["application/json": ["schema": ["type": "object"]]]]
            }
            var responses: [String: Any] = [:]
            for status in route.statuses {
                let media = (200...299).contains(status) ? route.produces : "application/json"
                responses[String(status)] = ["description": HTTPResponse.Status(code: status).reasonPhrase, "content": [media: ["schema": media == "application/json" ? ["type": ["object", "array"]] : ["type": "string"]]]]
            }
            if let role = route.role {
                operation["security"] = [["bearer": []]]
                operation["x-slipway-role"] = role.rawValue
                responses["401"] = ["description": "No token, or an unknown one"]
                responses["403"] = ["description": "The token's role is below \(role.rawValue)"]
            } else {
                operation["security"] = []
            }
            operation["responses"] = responses
            paths[route.path, default: [:]][route.method.rawValue.lowercased()] = operation
        }
        return [
            "openapi": "3.1.0",
            "info": ["title": "Slipway server API", "version": "1"],
            "components": ["securitySchemes": ["bearer": ["type": "http", "scheme": "bearer", "description": "`slipway token create --role ROLE`"]]],
            "paths": paths,
        ]
    }

    public static func router(_ services: ServerServices) -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        let api = APIController(services: services)
        let hooks = WebhookController(services: services)
        let runners = RunnerController(services: services)
        router.addMiddleware {
            RequestCounting(counter: services.requestCounts)
            TokenAuthenticator(store: services.store)
        }
        // A known path with a method it does not take: 405 with the methods it does.
        for (path, routes) in Dictionary(grouping: all, by: \.path) {
            let allowed = routes.map(\.method)
            let allow = allowed.map(\.rawValue).joined(separator: ", ")
            let routerPath = RouterPath(path.replacingOccurrences(of: "{", with: ":").replacingOccurrences(of: "}", with: ""))
            for method in otherMethods where !allowed.contains(method) {
                router.on(routerPath, method: method) { _, _ -> Response in
                    throw HTTPError(.methodNotAllowed, headers: [.allow: allow], message: "\(path) takes \(allow)")
                }
            }
        }
        for route in all {
            let handler = handler(for: route, api: api, hooks: hooks, runners: runners)
            let path = RouterPath(route.path.replacingOccurrences(of: "{", with: ":").replacingOccurrences(of: "}", with: ""))
            if let role = route.role {
                router.group().add(middleware: RoleRequirement(role: role)).on(path, method: route.method, use: handler)
            } else {
                router.on(path, method: route.method, use: handler)
            }
        }
        return router
    }

    typealias Handler = @Sendable (Request, ServerRequestContext) async throws -> Response

    static func handler(for route: Route, api: APIController, hooks: WebhookController, runners: RunnerController) -> Handler {
        switch (route.method, route.path) {
        case (.get, "/health"): return api.health
        case (.get, "/openapi.json"): return api.openAPI
        case (.post, "/hooks/github"): return { try await hooks.receive(.github, $0, $1) }
        case (.post, "/hooks/gitea"): return { try await hooks.receive(.gitea, $0, $1) }
        case (.get, "/api/projects"): return api.projects
        case (.get, "/api/projects/{project}"): return api.project
        case (.get, "/api/projects/{project}/requests"): return api.requests
        case (.post, "/api/projects/{project}/requests"): return api.trigger
        case (.get, "/api/requests/{id}"): return api.request
        case (.post, "/api/requests/{id}/cancel"): return api.cancel
        case (.get, "/api/projects/{project}/runs"): return api.runs
        case (.get, "/api/projects/{project}/runs/{number}"): return api.run
        case (.get, "/api/projects/{project}/runs/{number}/logs"): return api.logs
        case (.get, "/api/projects/{project}/runs/{number}/artifacts"): return api.artifacts
        case (.get, "/api/projects/{project}/runs/{number}/artifacts/{job}"): return api.artifact
        case (.get, "/api/projects/{project}/environments"): return api.environments
        case (.get, "/api/projects/{project}/explain/{subject}"): return api.explain
        case (.get, "/api/runners"): return runners.runners
        case (.post, "/api/runner/lease"): return runners.lease
        case (.post, "/api/runner/heartbeat"): return runners.heartbeat
        case (.get, "/api/runner/leases/{lease}/source"): return runners.source
        case (.get, "/api/runner/leases/{lease}/upstream/{index}"): return runners.upstream
        case (.post, "/api/runner/leases/{lease}/progress"): return runners.progress
        case (.put, "/api/runner/leases/{lease}/artifacts"): return runners.artifacts
        case (.post, "/api/runner/leases/{lease}/complete"): return runners.complete
        case (.get, "/api/tokens"): return api.tokens
        case (.get, "/metrics"): return api.metrics
        default: return { _, _ in throw HTTPError(.notFound, message: "no such route") }
        }
    }
}

/// Counts of answered requests; a Mutex'd dictionary is plenty at a CI server's request rates.
public final class RequestCounter: Sendable {
    public struct Key: Hashable, Sendable {
        public var method: String
        public var status: Int
    }
    private let counts = Mutex<[Key: Int]>([:])
    func add(method: String, status: Int) { counts.withLock { $0[Key(method: method, status: status), default: 0] += 1 } }
    public func snapshot() -> [Key: Int] { counts.withLock { $0 } }
}

/// Counts every answer, errors included (an error's status is the one the client gets).
struct RequestCounting: RouterMiddleware {
    let counter: RequestCounter

    func handle(_ request: Request, context: ServerRequestContext, next: (Request, ServerRequestContext) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            counter.add(method: request.method.rawValue, status: Int(response.status.code))
            return response
        } catch let error as any HTTPResponseError {
            counter.add(method: request.method.rawValue, status: Int(error.status.code))
            throw error
        } catch {
            counter.add(method: request.method.rawValue, status: 500)
            throw error
        }
    }
}

/// Looks up a bearer token when one is sent; a token that is sent but unknown is refused at once.
struct TokenAuthenticator: RouterMiddleware {
    let store: ServerStore

    func handle(_ request: Request, context: ServerRequestContext, next: (Request, ServerRequestContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else { return try await next(request, context) }
        guard header.hasPrefix("Bearer ") else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "send `Authorization: Bearer <token>` (see `slipway token create`)")
        }
        let value = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        guard let token = try? store.token(bearer: value) else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "unknown or revoked token")
        }
        var context = context
        context.token = token
        return try await next(request, context)
    }
}

/// 401 without a token, 403 with a token whose role is not enough.
struct RoleRequirement: RouterMiddleware {
    let role: TokenRole

    func handle(_ request: Request, context: ServerRequestContext, next: (Request, ServerRequestContext) async throws -> Response) async throws -> Response {
        guard let token = context.token else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "this route needs a token with role \(role.rawValue) or higher")
        }
        guard token.role.allows(role) else {
            throw HTTPError(.forbidden, message: "token '\(token.name)' has role \(token.role.rawValue); this route needs \(role.rawValue)")
        }
        return try await next(request, context)
    }
}

/// JSON responses with stable, sorted keys.
enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func text(_ text: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: .ok, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
