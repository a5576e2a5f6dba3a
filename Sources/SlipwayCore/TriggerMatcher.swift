/// Decides whether an event on a ref starts the pipeline, per its `on:` block.
public enum TriggerMatcher {
    public struct Decision: Sendable, Equatable {
        public var matches: Bool
        public var reason: String
    }

    public static let events = ["push", "pull_request", "schedule", "manual"]

    /// `changedFiles` nil means unknown (a local run): path filters are then not applied.
    public static func decide(_ triggers: Triggers, event: String, branch: String?, tag: String? = nil, changedFiles: [String]? = nil) -> Decision {
        guard triggers.declared else { return Decision(matches: true, reason: "the pipeline has no `on:` block, so every event runs it") }
        switch event {
        case "push", "pull_request":
            guard let filter = event == "push" ? triggers.push : triggers.pullRequest else {
                return Decision(matches: false, reason: "`on:` does not list '\(event)'")
            }
            if let tag {
                if filter.tags.isEmpty { return Decision(matches: !filter.branches.isEmpty ? false : filter.branchesIgnore.isEmpty, reason: "tag '\(tag)' with no `tags` filter") }
                return Glob.matchesList(filter.tags, tag)
                    ? Decision(matches: true, reason: "tag '\(tag)' matches `tags`")
                    : Decision(matches: false, reason: "tag '\(tag)' does not match `tags` \(filter.tags)")
            }
            if let branch {
                // As in GitHub Actions: a filter with only `tags` does not run for branch pushes.
                if filter.branches.isEmpty, filter.branchesIgnore.isEmpty, !filter.tags.isEmpty {
                    return Decision(matches: false, reason: "only tags trigger '\(event)', not branch '\(branch)'")
                }
                if !filter.branches.isEmpty, !Glob.matchesList(filter.branches, branch) {
                    return Decision(matches: false, reason: "branch '\(branch)' does not match `\(event).branches` \(filter.branches)")
                }
                if !filter.branchesIgnore.isEmpty, Glob.matchesList(filter.branchesIgnore, branch) {
                    return Decision(matches: false, reason: "branch '\(branch)' matches `\(event).branches-ignore`")
                }
            } else if !filter.tags.isEmpty, filter.branches.isEmpty {
                return Decision(matches: false, reason: "only tags trigger '\(event)'")
            }
            if let changedFiles {
                if !filter.paths.isEmpty, !changedFiles.contains(where: { Glob.matchesList(filter.paths, $0) }) {
                    return Decision(matches: false, reason: "no changed file matches `\(event).paths`")
                }
                if !filter.pathsIgnore.isEmpty, changedFiles.allSatisfy({ Glob.matchesList(filter.pathsIgnore, $0) }), !changedFiles.isEmpty {
                    return Decision(matches: false, reason: "every changed file matches `\(event).paths-ignore`")
                }
            }
            return Decision(matches: true, reason: "'\(event)' on '\(branch ?? "?")' matches `on.\(event)`")
        case "schedule":
            return triggers.schedules.isEmpty
                ? Decision(matches: false, reason: "`on:` has no `schedule`")
                : Decision(matches: true, reason: "`on.schedule` is declared")
        case "manual":
            return triggers.manualInputs == nil
                ? Decision(matches: false, reason: "`on:` does not list 'manual'")
                : Decision(matches: true, reason: "`on.manual` is declared")
        default:
            return Decision(matches: false, reason: "unknown event '\(event)'; events are \(events.joined(separator: ", "))")
        }
    }
}
