import Crypto
import Foundation

/// Who sent a webhook: GitHub and Gitea send the same JSON shapes with different headers.
public enum WebhookProvider: String, Sendable, CaseIterable {
    case github, gitea

    public var eventHeader: String { self == .github ? "X-GitHub-Event" : "X-Gitea-Event" }
    public var deliveryHeader: String { self == .github ? "X-GitHub-Delivery" : "X-Gitea-Delivery" }
    public var signatureHeader: String { self == .github ? "X-Hub-Signature-256" : "X-Gitea-Signature" }
}

/// HMAC-SHA256 webhook signatures: GitHub's `X-Hub-Signature-256: sha256=<hex>`, Gitea's `X-Gitea-Signature: <hex>`.
public enum WebhookSignature {
    public static func hex(body: some DataProtocol, secret: String) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
        return Data(code).hexString
    }

    /// The header value a sender would set for `body`.
    public static func header(body: some DataProtocol, secret: String, provider: WebhookProvider) -> String {
        provider == .github ? "sha256=" + hex(body: body, secret: secret) : hex(body: body, secret: secret)
    }

    /// Whether `header` is a valid signature of `body`; the comparison takes the same time wherever the
    /// first difference is (swift-crypto's `isValidAuthenticationCode`).
    public static func verify(body: some DataProtocol, secret: String, header: String?, provider: WebhookProvider) -> Bool {
        guard var value = header?.trimmingCharacters(in: .whitespaces), !secret.isEmpty else { return false }
        if value.hasPrefix("sha256=") { value.removeFirst(7) } else if provider == .github { return false }
        guard value.count == 64, let bytes = Hex.decode(value) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(bytes, authenticating: body, using: SymmetricKey(data: Data(secret.utf8)))
    }
}

/// The parts of a push, pull_request or ping delivery that decide whether and what to build.
public struct WebhookEvent: Sendable, Equatable {
    /// The event as the sender named it (`push`, `pull_request`, `ping`, …).
    public var name: String
    public var ref: String?
    public var before: String?
    /// The commit to build: `after` of a push, the head of a pull request.
    public var commit: String?
    public var deleted = false
    public var created = false
    public var commitCount = 0
    /// Files added, modified or removed by the pushed commits, when the payload lists them all.
    public var changedFiles: [String]?
    public var action: String?
    public var pullRequest: Int?
    public var headBranch: String?
    public var baseBranch: String?
    /// Addresses the repository is known by (clone, ssh, html URL, owner/name), to find the project.
    public var repository: [String] = []

    /// What the server does with a delivery.
    public enum Trigger: Sendable, Equatable {
        /// Start the pipeline if its `on:` block agrees: the event name for `on:`, the branch or tag, the commit.
        case start(event: String, branch: String?, tag: String?, commit: String, changedFiles: [String]?)
        case ignore(String)
    }

    /// Pull request actions that build, as GitHub Actions' default `pull_request` types.
    public static let buildingActions: Set<String> = ["opened", "synchronize", "synchronized", "reopened"]
    static let zeroCommit = String(repeating: "0", count: 40)

    public static func parse(event: String, body: Data) throws(CoreError) -> WebhookEvent {
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw CoreError("the payload is not a JSON object")
            }
            object = parsed
        } catch let error as CoreError {
            throw error
        } catch {
            throw CoreError("the payload is not valid JSON")
        }
        var result = WebhookEvent(name: event)
        if let repository = object["repository"] as? [String: Any] {
            for key in ["clone_url", "ssh_url", "html_url", "full_name", "git_url"] {
                if let value = repository[key] as? String, !value.isEmpty { result.repository.append(value) }
            }
        }
        switch event {
        case "push":
            result.ref = object["ref"] as? String
            result.before = object["before"] as? String
            result.commit = object["after"] as? String
            result.deleted = (object["deleted"] as? Bool) ?? (result.commit == zeroCommit)
            result.created = (object["created"] as? Bool) ?? (result.before == zeroCommit)
            let commits = (object["commits"] as? [[String: Any]]) ?? []
            result.commitCount = commits.count
            // GitHub lists at most 20 commits, Gitea 5 by default (and says how many there were in
            // `total_commits`): with a list that may be cut short, the changed files are unknown.
            let total = (object["total_commits"] as? Int) ?? (object["size"] as? Int) ?? commits.count
            if commits.count < 20, total <= commits.count {
                var files: [String] = []
                var seen = Set<String>()
                for commit in commits {
                    for key in ["added", "modified", "removed"] {
                        for file in (commit[key] as? [String]) ?? [] where seen.insert(file).inserted { files.append(file) }
                    }
                }
                result.changedFiles = commits.isEmpty ? nil : files
            }
        case "pull_request":
            result.action = object["action"] as? String
            result.pullRequest = object["number"] as? Int
            if let pull = object["pull_request"] as? [String: Any] {
                let head = pull["head"] as? [String: Any]
                let base = pull["base"] as? [String: Any]
                result.commit = head?["sha"] as? String
                result.headBranch = head?["ref"] as? String
                result.baseBranch = base?["ref"] as? String
            }
        default:
            break
        }
        return result
    }

    public var trigger: Trigger {
        switch name {
        case "ping":
            return .ignore("ping: the hook works; nothing to build")
        case "push":
            guard let ref, let commit else { return .ignore("push without `ref` or `after`") }
            if deleted || commit == Self.zeroCommit { return .ignore("\(ref) was deleted; nothing to build") }
            if commitCount == 0, !created { return .ignore("the push to \(ref) has no commits; nothing to build") }
            if commitCount == 0, created, ref.hasPrefix("refs/heads/") {
                return .ignore("branch \(ref.dropFirst(11)) was created without new commits; nothing to build")
            }
            if ref.hasPrefix("refs/heads/") {
                return .start(event: "push", branch: String(ref.dropFirst(11)), tag: nil, commit: commit, changedFiles: changedFiles)
            }
            if ref.hasPrefix("refs/tags/") {
                return .start(event: "push", branch: nil, tag: String(ref.dropFirst(10)), commit: commit, changedFiles: changedFiles)
            }
            return .ignore("push to \(ref), which is neither a branch nor a tag")
        case "pull_request":
            guard let action, let commit else { return .ignore("pull_request without `action` or a head commit") }
            guard Self.buildingActions.contains(action) else {
                return .ignore("pull request action '\(action)' does not build (opened, synchronize and reopened do)")
            }
            // As in GitHub Actions, `on.pull_request.branches` filters on the base branch.
            return .start(event: "pull_request", branch: baseBranch, tag: nil, commit: commit, changedFiles: nil)
        default:
            return .ignore("event '\(name)' does not start pipelines (push and pull_request do)")
        }
    }
}
