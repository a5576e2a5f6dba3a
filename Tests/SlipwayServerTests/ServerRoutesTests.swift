import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SlipwayCore
import SlipwayStore
import Testing
@testable import SlipwayServer

/// The HTTP surface through Hummingbird's router test client: auth for every route, webhooks with the
/// real GitHub payloads, and bad input answered with 4xx.
@Suite struct ServerRoutesTests {
    let directory: String
    let store: ServerStore
    let services: ServerServices
    let secret = "It's a Secret to Everybody"

    init() throws {
        directory = NSTemporaryDirectory() + "slipway-server-" + UUID().uuidString
        let layout = ServerLayout(root: directory)
        store = try SlipwayServer.openStore(layout, database: TestDatabase.location())
        try store.addProject(ProjectRecord(name: "demo", repository: "https://github.com/Codertocat/Hello-World.git", secretVariable: "HOOK_SECRET"))
        try store.addProject(ProjectRecord(name: "nosecret", repository: "/nowhere/other.git"))
        services = ServerServices(store: store, layout: layout, dispatcher: RunDispatcher(store: store, layout: layout), broker: RunnerBroker(),
                                  environment: ["HOOK_SECRET": secret])
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }

    func withClient(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: ServerRoutes.router(services))
        try await app.test(.router) { client in try await body(client) }
    }

    func fixture(_ name: String) throws -> Data {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../SlipwayCoreTests/Fixtures/webhooks/github/\(name)").standardizedFileURL
        return try Data(contentsOf: url)
    }

    func concrete(_ path: String) -> String {
        path.replacingOccurrences(of: "{project}", with: "demo").replacingOccurrences(of: "{id}", with: "1").replacingOccurrences(of: "{number}", with: "1")
            .replacingOccurrences(of: "{lease}", with: "1").replacingOccurrences(of: "{index}", with: "0")
    }

    @Test func everyRouteChecksTheRoleItNeeds() async throws {
        defer { cleanUp() }
        var tokens: [TokenRole: String] = [:]
        for role in TokenRole.allCases { tokens[role] = try store.createToken(name: role.rawValue, role: role).1 }
        let frozenTokens = tokens
        _ = try store.enqueue(RunRequestRecord(project: "demo", event: "manual", source: "test"))
        try await withClient { client in
            for route in ServerRoutes.all {
                guard let required = route.role else { continue }
                let uri = concrete(route.path)
                let body = route.method == .post ? ByteBuffer(string: "{}") : nil
                try await client.execute(uri: uri, method: route.method, body: body) { response in
                    #expect(response.status == .unauthorized, "\(route.method) \(uri) without a token: \(response.status)")
                }
                try await client.execute(uri: uri, method: route.method, headers: [.authorization: "Bearer slw_" + String(repeating: "0", count: 64)], body: body) { response in
                    #expect(response.status == .unauthorized, "\(route.method) \(uri) with an unknown token: \(response.status)")
                }
                for role in TokenRole.allCases {
                    try await client.execute(uri: uri, method: route.method, headers: [.authorization: "Bearer " + frozenTokens[role]!], body: body) { response in
                        if role.allows(required) {
                            #expect(response.status != .unauthorized && response.status != .forbidden, "\(role) on \(route.method) \(uri): \(response.status)")
                            #expect(response.status.code < 500, "\(role) on \(route.method) \(uri): \(response.status)")
                        } else {
                            #expect(response.status == .forbidden, "\(role) on \(route.method) \(uri): \(response.status)")
                        }
                    }
                }
            }
        }
    }

    @Test func healthNeedsNoToken() async throws {
        defer { cleanUp() }
        try await withClient { client in
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("\"status\":\"ok\""))
            }
        }
    }

    func signed(_ body: Data, event: String, delivery: String, secret: String? = nil, provider: WebhookProvider = .github) -> HTTPFields {
        var fields = HTTPFields()
        fields[HTTPField.Name(provider.eventHeader)!] = event
        fields[HTTPField.Name(provider.deliveryHeader)!] = delivery
        fields[HTTPField.Name(provider.signatureHeader)!] = WebhookSignature.header(body: body, secret: secret ?? self.secret, provider: provider)
        fields[.contentType] = "application/json"
        return fields
    }

    /// The new-branch push from the fixtures, for this project's repository.
    @Test func signedPushIsQueuedOnceAndRedeliveryStartsNothing() async throws {
        defer { cleanUp() }
        let body = try fixture("push-with-new-branch.payload.json")
        try await withClient { client in
            try await client.execute(uri: "/hooks/github", method: .post, headers: signed(body, event: "push", delivery: "guid-1"), body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .accepted)
            }
            try await client.execute(uri: "/hooks/github", method: .post, headers: signed(body, event: "push", delivery: "guid-1"), body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("\"duplicate\":true"))
            }
        }
        let requests = try store.requests(project: "demo")
        #expect(requests.count == 1)
        #expect(requests.first?.branch == "master")
        #expect(requests.first?.commit == "6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        #expect(requests.first?.changedFiles == "[\"README.md\"]")
    }

    @Test func giteaSignaturesAndHeadersWork() async throws {
        defer { cleanUp() }
        let body = try fixture("push-with-new-branch.payload.json")
        try await withClient { client in
            try await client.execute(uri: "/hooks/gitea?project=demo", method: .post, headers: signed(body, event: "push", delivery: "g-1", provider: .gitea), body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .accepted)
            }
            // A GitHub-style header on the Gitea route is not a Gitea signature.
            try await client.execute(uri: "/hooks/gitea?project=demo", method: .post, headers: signed(body, event: "push", delivery: "g-2", provider: .github), body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .badRequest || response.status == .unauthorized)
            }
        }
        #expect(try store.requests(project: "demo").count == 1)
    }

    @Test func badSignaturesStartNothingAndRecordNothing() async throws {
        defer { cleanUp() }
        let body = try fixture("push-with-new-branch.payload.json")
        try await withClient { client in
            var wrongSecret = signed(body, event: "push", delivery: "x-1", secret: "not the secret")
            try await client.execute(uri: "/hooks/github", method: .post, headers: wrongSecret, body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .unauthorized)
            }
            wrongSecret[HTTPField.Name("X-Hub-Signature-256")!] = nil
            try await client.execute(uri: "/hooks/github", method: .post, headers: wrongSecret, body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .unauthorized)
            }
            // Signed for another body.
            let tampered = Data(body.dropLast()) + Data(" ".utf8)
            try await client.execute(uri: "/hooks/github", method: .post, headers: signed(body, event: "push", delivery: "x-2"), body: ByteBuffer(bytes: tampered)) { response in
                #expect(response.status == .unauthorized)
            }
            // A project without a configured secret accepts nothing.
            try await client.execute(uri: "/hooks/github?project=nosecret", method: .post, headers: signed(body, event: "push", delivery: "x-3"), body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .unauthorized)
            }
        }
        #expect(try store.requests().isEmpty)
        #expect(try store.deliveryCounts().isEmpty)
    }

    /// A body nobody signed is refused before it is parsed: unreadable JSON under a wrong signature is 401,
    /// not the 400 that parsing it would give; under a good signature it is parsed (and is 400).
    @Test func signatureIsCheckedBeforeThePayloadIsParsed() async throws {
        defer { cleanUp() }
        let garbage = Data("{not json".utf8)
        try await withClient { client in
            for uri in ["/hooks/github", "/hooks/github?project=demo"] {
                try await client.execute(uri: uri, method: .post, headers: signed(garbage, event: "push", delivery: "u", secret: "wrong"), body: ByteBuffer(bytes: garbage)) { response in
                    #expect(response.status == .unauthorized, "\(uri): \(response.status)")
                }
                try await client.execute(uri: uri, method: .post, headers: signed(garbage, event: "push", delivery: "s"), body: ByteBuffer(bytes: garbage)) { response in
                    #expect(response.status == .badRequest, "\(uri): \(response.status)")
                }
            }
        }
        #expect(try store.deliveryCounts().isEmpty)
    }

    @Test func pingTagDeletionAndClosedPullRequestAreAnsweredButBuildNothing() async throws {
        defer { cleanUp() }
        try await withClient { client in
            for (file, event) in [("ping-payload.json", "ping"), ("push-payload.json", "push"), ("pull_request-closed.payload.json", "pull_request")] {
                let body = try fixture(file)
                // The ping comes from another repository: name the project.
                try await client.execute(uri: "/hooks/github?project=demo", method: .post, headers: signed(body, event: event, delivery: file), body: ByteBuffer(bytes: body)) { response in
                    #expect(response.status == .ok, "\(file): \(response.status)")
                    #expect(String(buffer: response.body).contains("\"result\":\"ignored\""))
                }
            }
            let opened = try fixture("pull_request-opened.payload.json")
            try await client.execute(uri: "/hooks/github", method: .post, headers: signed(opened, event: "pull_request", delivery: "pr-1"), body: ByteBuffer(bytes: opened)) { response in
                #expect(response.status == .accepted)
            }
        }
        let requests = try store.requests()
        #expect(requests.count == 1)
        #expect(requests.first?.event == "pull_request")
        #expect(requests.first?.branch == "master")
        #expect(try store.deliveryCounts() == ["ignored": 3, "queued": 1])
    }

    @Test func badInputGets4xxNever5xx() async throws {
        defer { cleanUp() }
        let developer = try store.createToken(name: "dev", role: .developer).1
        try await withClient { client in
            let garbage = Data("{not json".utf8)
            try await client.execute(uri: "/hooks/github?project=demo", method: .post, headers: signed(garbage, event: "push", delivery: "g"), body: ByteBuffer(bytes: garbage)) { response in
                #expect(response.status == .badRequest)
            }
            var noEvent = signed(garbage, event: "push", delivery: "g2")
            noEvent[HTTPField.Name("X-GitHub-Event")!] = nil
            try await client.execute(uri: "/hooks/github?project=demo", method: .post, headers: noEvent, body: ByteBuffer(bytes: garbage)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/hooks/github?project=missing", method: .post, headers: signed(garbage, event: "push", delivery: "g3"), body: ByteBuffer(bytes: garbage)) { response in
                #expect(response.status == .notFound)
            }
            let huge = ByteBuffer(repeating: UInt8(ascii: " "), count: 26 * 1024 * 1024)
            try await client.execute(uri: "/hooks/github?project=demo", method: .post, headers: signed(Data(), event: "push", delivery: "g4"), body: huge) { response in
                #expect(response.status == .contentTooLarge)
            }
            let auth: HTTPFields = [.authorization: "Bearer " + developer, .contentType: "application/json"]
            for body in ["{", "[]", "{\"branch\": 5}", "{\"commit\": \"zz\"}", "{\"event\": \"nope\"}", "{\"branch\": \"--upload-pack=x\"}", "{\"branch\": \"a..b\"}"] {
                try await client.execute(uri: "/api/projects/demo/requests", method: .post, headers: auth, body: ByteBuffer(string: body)) { response in
                    #expect(response.status == .badRequest, "\(body): \(response.status)")
                }
            }
            for uri in ["/api/projects/..%2F..%2Fetc/runs", "/api/projects/nope", "/api/projects/demo/runs/1", "/api/projects/demo/runs/abc/logs", "/api/requests/999", "/api/requests/-1"] {
                try await client.execute(uri: uri, method: .get, headers: auth) { response in
                    #expect(response.status == .notFound, "\(uri): \(response.status)")
                }
            }
        }
        #expect(try store.requests().isEmpty)
    }

    @Test func queuedRequestsCanBeCancelledBeforeTheyStart() async throws {
        defer { cleanUp() }
        let developer = try store.createToken(name: "dev", role: .developer).1
        try await withClient { client in
            let auth: HTTPFields = [.authorization: "Bearer " + developer, .contentType: "application/json"]
            try await client.execute(uri: "/api/projects/demo/requests", method: .post, headers: auth, body: ByteBuffer(string: "{\"branch\": \"main\", \"inputs\": {\"a\": \"1\"}}")) { response in
                #expect(response.status == .accepted)
            }
            try await client.execute(uri: "/api/requests/1/cancel", method: .post, headers: auth) { response in
                #expect(response.status == .accepted)
            }
            try await client.execute(uri: "/api/requests/1/cancel", method: .post, headers: auth) { response in
                #expect(response.status == .conflict)
            }
        }
        let request = try #require(try store.request(id: 1))
        #expect(request.status == "cancelled")
        #expect(request.inputs == "{\"a\":\"1\"}")
        #expect(try store.claimNext() == nil)
    }

    /// Every operation in the served document exists and answers with a status it documents.
    @Test func openAPIDocumentMatchesTheRouter() async throws {
        defer { cleanUp() }
        let admin = try store.createToken(name: "admin", role: .admin).1
        _ = try store.enqueue(RunRequestRecord(project: "demo", event: "manual", source: "test"))
        try await withClient { client in
            let document = try await client.execute(uri: "/openapi.json", method: .get) { response -> [String: Any] in
                #expect(response.status == .ok)
                return try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
            }
            #expect(document["openapi"] as? String == "3.1.0")
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            var operations = 0
            for (path, methods) in paths {
                for (method, value) in methods {
                    let operation = try #require(value as? [String: Any])
                    let documented = Set(((operation["responses"] as? [String: Any]) ?? [:]).keys.compactMap { Int($0) })
                    let uri = concrete(path)
                    let needsToken = !((operation["security"] as? [Any]) ?? []).isEmpty
                    let headers: HTTPFields = needsToken ? [.authorization: "Bearer " + admin] : [:]
                    let body = method == "post" ? ByteBuffer(string: "{}") : nil
                    try await client.execute(uri: uri, method: HTTPRequest.Method(method.uppercased())!, headers: headers, body: body) { response in
                        #expect(!(response.status == .notFound && response.body.readableBytes == 0), "\(method) \(path) is documented but not routed")
                        #expect(documented.contains(Int(response.status.code)), "\(method) \(path) answered \(response.status), documented \(documented.sorted())")
                    }
                    operations += 1
                }
            }
            #expect(operations == ServerRoutes.all.count)
        }
    }

    @Test func metricsCountRequestsAndHistogramTheQueue() async throws {
        defer { cleanUp() }
        let viewer = try store.createToken(name: "v", role: .viewer).1
        var request = try store.enqueue(RunRequestRecord(project: "demo", event: "manual", source: "test", createdAt: Date(timeIntervalSinceNow: -3)))
        _ = try #require(try store.claimNext())
        request = try #require(try store.request(id: request.id))
        request.status = "success"
        request.finishedAt = Date(timeIntervalSinceNow: 20)
        try store.update(request)
        try await withClient { client in
            try await client.execute(uri: "/api/projects", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer " + viewer]) { response in
                let text = String(buffer: response.body)
                #expect(text.contains("slipway_http_requests_total{method=\"GET\",status=\"401\"} 1"), "\(text)")
                #expect(text.contains("slipway_queue_wait_seconds_bucket{le=\"1.0\"} 0"), "\(text)")
                #expect(text.contains("slipway_queue_wait_seconds_bucket{le=\"5.0\"} 1"), "\(text)")
                #expect(text.contains("slipway_run_duration_seconds_bucket{status=\"success\",le=\"10.0\"} 0"), "\(text)")
                #expect(text.contains("slipway_run_duration_seconds_bucket{status=\"success\",le=\"30.0\"} 1"), "\(text)")
                #expect(text.contains("slipway_run_duration_seconds_count{status=\"success\"} 1"), "\(text)")
                #expect(text.contains("slipway_queue_depth 0"))
            }
        }
    }

    /// What schemathesis (`schemathesis run /openapi.json --checks all`) found, kept as regression cases.
    @Test func fuzzFindingsStayFixed() async throws {
        defer { cleanUp() }
        let admin = try store.createToken(name: "a", role: .admin).1
        try await withClient { client in
            // ST204: a method a path does not take is 405 with `Allow`, not 404.
            for (method, uri, allow) in [(HTTPRequest.Method.trace, "/api/projects", "GET"), (.trace, "/health", "GET"), (.delete, "/api/tokens", "GET"),
                                         (.trace, "/hooks/github", "POST"), (.put, "/api/projects/demo/requests", "GET, POST"),
                                         (HTTPRequest.Method("QUERY")!, "/metrics", "GET")] {
                try await client.execute(uri: uri, method: method, headers: [.authorization: "Bearer " + admin]) { response in
                    #expect(response.status == .methodNotAllowed, "\(method) \(uri): \(response.status)")
                    #expect(response.headers[.allow].map { Set($0.components(separatedBy: ", ")) } == Set(allow.components(separatedBy: ", ")), "\(method) \(uri)")
                }
            }
            // ST202: the webhook's required headers are documented; a body without them is 400.
            try await client.execute(uri: "/hooks/github", method: .post, body: ByteBuffer(string: "{}")) { response in
                #expect(response.status == .badRequest)
            }
            // ST203: without a signature header it is 401 at once, whatever the project.
            try await client.execute(uri: "/hooks/github?project=", method: .post,
                                     headers: [HTTPField.Name("X-GitHub-Event")!: "0", HTTPField.Name("X-GitHub-Delivery")!: "0"],
                                     body: ByteBuffer(string: "{}")) { response in
                #expect(response.status == .unauthorized)
            }
        }
        let document = ServerRoutes.openAPIDocument()
        let hook = try #require(((document["paths"] as? [String: [String: Any]])?["/hooks/github"]?["post"]) as? [String: Any])
        let headers = ((hook["parameters"] as? [[String: Any]]) ?? []).filter { $0["in"] as? String == "header" }.compactMap { $0["name"] as? String }
        #expect(Set(headers) == ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256"])
        #expect((hook["requestBody"] as? [String: Any])?["required"] as? Bool == true)
    }
}
