import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import SlipwayCore
import SlipwayStore

/// `POST /hooks/github` and `/hooks/gitea`: verify the signature, record the delivery once, queue a run.
struct WebhookController: Sendable {
    let services: ServerServices

    struct Reply: Encodable {
        var result: String
        var reason: String?
        var request: Int64?
        var duplicate: Bool?
    }

    func receive(_ provider: WebhookProvider, _ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        let bytes = Data(buffer: body)
        guard let eventName = request.headers[HTTPField.Name(provider.eventHeader)!], !eventName.isEmpty else {
            throw HTTPError(.badRequest, message: "missing \(provider.eventHeader) header")
        }
        // Unsigned deliveries are refused before anything else is looked at.
        guard request.headers[HTTPField.Name(provider.signatureHeader)!]?.isEmpty == false else {
            throw HTTPError(.unauthorized, message: "missing \(provider.signatureHeader) signature")
        }
        // The signature is checked before the payload is parsed at all, so an unauthenticated peer cannot
        // make the server parse a large JSON body: with `?project=` against that project's secret, without
        // it against every configured secret (an HMAC is far cheaper than parsing).
        let named = try request.uri.queryParameters.get("project").map { try findProject(for: nil, query: $0) }
        if let named {
            try verify(bytes, for: named, provider: provider, request: request)
        } else {
            try requireSomeSigner(bytes, provider: provider, request: request)
        }
        let event: WebhookEvent
        do { event = try WebhookEvent.parse(event: eventName, body: bytes) } catch {
            throw HTTPError(.badRequest, message: "cannot read the \(eventName) payload: \(error.message)")
        }
        let project = try named ?? findProject(for: event, query: nil)
        // The project the payload names must itself have signed it, not just some project.
        if named == nil { try verify(bytes, for: project, provider: provider, request: request) }
        // A delivery is known by the digest of its signed body, not by its id header (which the signature
        // does not cover): a redelivery is the same body, and a replay under a new id is caught too.
        let deliveryID = "\(provider.rawValue):sha256:\(SHA256.hash(data: bytes).hexString)"
        var runRequest: RunRequestRecord?
        let result: String
        var reason: String?
        switch event.trigger {
        case .start(let name, let branch, let tag, let commit, let changedFiles):
            let files = changedFiles.flatMap { try? JSONEncoder().encode($0) }.map { String(decoding: $0, as: UTF8.self) }
            let delivery = request.headers[HTTPField.Name(provider.deliveryHeader)!].map { "\(provider.rawValue):\($0.prefix(100))" } ?? deliveryID
            runRequest = RunRequestRecord(project: project.name, event: name, branch: branch, tag: tag, commit: commit,
                                          changedFiles: files, source: delivery,
                                          headRef: name == "pull_request" ? event.pullRequest.map { "\($0)" } ?? event.headBranch : nil,
                                          before: name == "push" ? event.before : nil)
            result = "queued"
        case .ignore(let why):
            result = "ignored"
            reason = why
        }
        let outcome: ServerStore.DeliveryOutcome
        do {
            outcome = try services.store.recordDelivery(id: deliveryID, project: project.name, event: eventName, result: result, request: runRequest)
        } catch {
            throw HTTPError(.internalServerError, message: "cannot record the delivery: \(error)")
        }
        switch outcome {
        case .duplicate(let previous):
            return try JSONResponse.make(Reply(result: previous, reason: "this delivery was received before; nothing done again", duplicate: true))
        case .accepted(let requestID):
            if requestID != nil { services.dispatcher.wake() }
            return try JSONResponse.make(Reply(result: result, reason: reason, request: requestID), status: requestID == nil ? .ok : .accepted)
        }
    }

    func verify(_ bytes: Data, for project: ProjectRecord, provider: WebhookProvider, request: Request) throws {
        // The secret lives in the server's environment, under the name the project gives.
        guard let variable = project.secretVariable, let secret = services.environment[variable], !secret.isEmpty else {
            throw HTTPError(.unauthorized, message: "project '\(project.name)' has no webhook secret configured; add it with --webhook-secret-from-env")
        }
        let signature = request.headers[HTTPField.Name(provider.signatureHeader)!]
        guard WebhookSignature.verify(body: bytes, secret: secret, header: signature, provider: provider) else {
            throw HTTPError(.unauthorized, message: "bad or missing \(provider.signatureHeader) signature")
        }
    }

    /// Refuses a delivery that no project's secret signed (each distinct secret is tried once).
    func requireSomeSigner(_ bytes: Data, provider: WebhookProvider, request: Request) throws {
        let projects: [ProjectRecord]
        do { projects = try services.store.projects() } catch {
            throw HTTPError(.internalServerError, message: error.message)
        }
        let signature = request.headers[HTTPField.Name(provider.signatureHeader)!]
        let secrets = Set(projects.compactMap { $0.secretVariable.flatMap { services.environment[$0] } }.filter { !$0.isEmpty })
        guard !secrets.isEmpty else {
            throw HTTPError(.unauthorized, message: "no project has a webhook secret configured; add one with --webhook-secret-from-env")
        }
        guard secrets.contains(where: { WebhookSignature.verify(body: bytes, secret: $0, header: signature, provider: provider) }) else {
            throw HTTPError(.unauthorized, message: "bad or missing \(provider.signatureHeader) signature")
        }
    }

    /// The project a delivery is for: `?project=NAME`, or the one whose repository the payload names.
    func findProject(for event: WebhookEvent?, query: String?) throws -> ProjectRecord {
        let projects: [ProjectRecord]
        do { projects = try services.store.projects() } catch {
            throw HTTPError(.internalServerError, message: error.message)
        }
        if let query {
            guard let project = projects.first(where: { $0.name == query }) else {
                throw HTTPError(.notFound, message: "no project named '\(query)'")
            }
            return project
        }
        let repository = event?.repository ?? []
        let names = Set(repository.map(Self.ownerAndName))
        let matches = projects.filter { names.contains(Self.ownerAndName($0.repository)) }
        guard matches.count == 1 else {
            throw HTTPError(.notFound, message: matches.isEmpty
                ? "no project for repository \(repository.first ?? "?"); add one with `slipway project add`, or add ?project=NAME to the hook URL"
                : "several projects use repository \(repository.first ?? "?"); add ?project=NAME to the hook URL")
        }
        return matches[0]
    }

    /// `https://host/owner/name.git`, `git@host:owner/name.git` and `owner/name` compare equal on owner/name.
    static func ownerAndName(_ address: String) -> String {
        var value = address.trimmingCharacters(in: .whitespaces)
        if value.hasSuffix("/") { value.removeLast() }
        if value.hasSuffix(".git") { value.removeLast(4) }
        let parts = value.split(whereSeparator: { $0 == "/" || $0 == ":" })
        return parts.suffix(2).joined(separator: "/").lowercased()
    }
}
