import Foundation
import Testing
@testable import SlipwayCore

/// Real GitHub payloads (Fixtures/webhooks, from octokit/webhooks) and GitHub's documented signature vector.
@Suite struct WebhookEventTests {
    func fixture(_ name: String) throws -> Data {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/webhooks/github/\(name)")
        return try Data(contentsOf: url)
    }

    @Test func githubsDocumentedSignatureVector() {
        let body = Data("Hello, World!".utf8)
        let secret = "It's a Secret to Everybody"
        #expect(WebhookSignature.hex(body: body, secret: secret) == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
        #expect(WebhookSignature.verify(body: body, secret: secret, header: "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", provider: .github))
        #expect(WebhookSignature.verify(body: body, secret: secret, header: "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", provider: .gitea))
    }

    @Test func badSignaturesAreRejected() {
        let body = Data("Hello, World!".utf8)
        let secret = "It's a Secret to Everybody"
        let good = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        for header in [nil, "", "sha256=", good /* GitHub needs the prefix */, "sha1=" + good, "sha256=" + good.uppercased().replacingOccurrences(of: "7", with: "8"),
                       "sha256=" + String(good.dropLast()), "sha256=" + good + "00", "sha256=zz" + good.dropFirst(2)] {
            #expect(!WebhookSignature.verify(body: body, secret: secret, header: header, provider: .github), "accepted \(header ?? "nil")")
        }
        #expect(!WebhookSignature.verify(body: Data("Hello, World?".utf8), secret: secret, header: "sha256=" + good, provider: .github))
        #expect(!WebhookSignature.verify(body: body, secret: "other", header: "sha256=" + good, provider: .github))
        #expect(!WebhookSignature.verify(body: body, secret: "", header: "sha256=" + good, provider: .github))
        // Upper-case hex is the same signature.
        #expect(WebhookSignature.verify(body: body, secret: secret, header: "sha256=" + good.uppercased(), provider: .github))
    }

    @Test func tagDeletionBuildsNothing() throws {
        let event = try WebhookEvent.parse(event: "push", body: fixture("push-payload.json"))
        #expect(event.ref == "refs/tags/simple-tag")
        #expect(event.deleted)
        guard case .ignore(let reason) = event.trigger else { Issue.record("a tag deletion must not build"); return }
        #expect(reason.contains("deleted"))
        #expect(event.repository.contains("https://github.com/Codertocat/Hello-World.git"))
        #expect(event.repository.contains("Codertocat/Hello-World"))
    }

    @Test func newBranchWithACommitBuildsIt() throws {
        let event = try WebhookEvent.parse(event: "push", body: fixture("push-with-new-branch.payload.json"))
        #expect(event.trigger == .start(event: "push", branch: "master", tag: nil, commit: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", changedFiles: ["README.md"]))
    }

    @Test func pullRequestOpenedBuildsTheHeadAgainstTheBase() throws {
        let event = try WebhookEvent.parse(event: "pull_request", body: fixture("pull_request-opened.payload.json"))
        #expect(event.pullRequest == 2)
        #expect(event.headBranch == "changes")
        #expect(event.trigger == .start(event: "pull_request", branch: "master", tag: nil, commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", changedFiles: nil))
    }

    @Test func pullRequestClosedAndPingBuildNothing() throws {
        let closed = try WebhookEvent.parse(event: "pull_request", body: fixture("pull_request-closed.payload.json"))
        guard case .ignore(let reason) = closed.trigger else { Issue.record("closed must not build"); return }
        #expect(reason.contains("closed"))
        let ping = try WebhookEvent.parse(event: "ping", body: fixture("ping-payload.json"))
        guard case .ignore = ping.trigger else { Issue.record("ping must not build"); return }
        #expect(ping.repository.contains("Octocoders/Hello-World"))
    }

    @Test func pushesWithoutCommitsBuildNothing() throws {
        var object = try #require(try JSONSerialization.jsonObject(with: fixture("push-with-new-branch.payload.json")) as? [String: Any])
        object["commits"] = []
        object["head_commit"] = NSNull()
        let event = try WebhookEvent.parse(event: "push", body: JSONSerialization.data(withJSONObject: object))
        guard case .ignore = event.trigger else { Issue.record("a push of zero commits must not build"); return }
        object["created"] = false
        let second = try WebhookEvent.parse(event: "push", body: JSONSerialization.data(withJSONObject: object))
        guard case .ignore = second.trigger else { Issue.record("a push of zero commits must not build"); return }
    }

    @Test func malformedPayloadsAreErrorsNotCrashes() {
        for body in ["", "[]", "{", "null", "\"push\"", "{\"ref\": 5, \"after\": []}", String(repeating: "[", count: 100_000)] {
            if let event = try? WebhookEvent.parse(event: "push", body: Data(body.utf8)) {
                guard case .ignore = event.trigger else { Issue.record("\(body.prefix(20)) started a build"); continue }
            }
        }
    }
}
