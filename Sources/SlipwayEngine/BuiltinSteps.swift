import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayDeploy
import SlipwayStore

/// The steps built into Slipway (`uses: slipway/...`), run in-process; they write their report to the
/// step's log like any other step and store findings for `explain`.
struct BuiltinSteps: Sendable {
    let store: RunStore
    let releaseStore: ReleaseStore?

    struct Outcome {
        var failure: String?
        var lines: [String]
        var findings: [ScanFindingRecord]
    }

    func run(_ step: BuiltinStep, with inputs: [String: String], workspace: String, runID: Int64, jobKey: String) async -> Outcome {
        switch step {
        case .secretScan: secretScan(inputs, workspace: workspace, runID: runID, jobKey: jobKey)
        case .dependencyCheck: dependencyCheck(inputs, workspace: workspace, runID: runID, jobKey: jobKey)
        case .load: await load(inputs)
        }
    }

    /// `slipway/load`: open-loop HTTP load; reports requests, errors and latency percentiles, and fails when
    /// `max-error-percent` is given and exceeded.
    func load(_ inputs: [String: String]) async -> Outcome {
        let url = inputs["url"] ?? ""
        guard HTTPClient.Target(url: url) != nil else {
            return Outcome(failure: "`with.url` must be an http:// URL, got '\(url)'", lines: [], findings: [])
        }
        guard let rps = Double(inputs["rps"] ?? "10"), rps > 0, rps <= 20_000 else {
            return Outcome(failure: "`with.rps` must be a number between 0 and 20000", lines: [], findings: [])
        }
        guard let duration = DurationParser.parse(inputs["duration"] ?? "10s"), duration > .zero, duration <= .seconds(3600) else {
            return Outcome(failure: "`with.duration` must be a duration up to 1h, like 30s", lines: [], findings: [])
        }
        let timeout = DurationParser.parse(inputs["timeout"] ?? "5s") ?? .seconds(5)
        var headers: [(String, String)] = []
        if let header = inputs["header"] {
            guard let colon = header.firstIndex(of: ":"), !header.contains("\n"), !header.contains("\r") else {
                return Outcome(failure: "`with.header` must be `Name: value`", lines: [], findings: [])
            }
            headers.append((String(header[..<colon]).trimmingCharacters(in: .whitespaces), String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
        }
        var lines = ["load: \(url) at \(inputs["rps"] ?? "10") rps for \(DurationParser.format(duration))"]
        let report = await LoadGenerator(url: url, rps: rps, duration: duration, headers: headers, timeout: timeout).run()
        lines.append(report.summary)
        if let limitText = inputs["max-error-percent"] {
            guard let limit = Double(limitText) else {
                return Outcome(failure: "`with.max-error-percent` must be a number", lines: lines, findings: [])
            }
            if report.errorPercent > limit {
                return Outcome(failure: String(format: "error rate %.2f%% is above max-error-percent %g", report.errorPercent, limit), lines: lines, findings: [])
            }
        }
        return Outcome(failure: nil, lines: lines, findings: [])
    }

    static func inside(_ workspace: String, _ relative: String?) -> String? {
        guard let relative, !relative.isEmpty, relative != "." else { return workspace }
        if relative.hasPrefix("/") || relative.split(separator: "/").contains("..") { return nil }
        return workspace + "/" + relative
    }

    func secretScan(_ inputs: [String: String], workspace: String, runID: Int64, jobKey: String) -> Outcome {
        guard let root = Self.inside(workspace, inputs["path"]) else {
            return Outcome(failure: "`with.path` must stay inside the workspace", lines: [], findings: [])
        }
        var lines: [String] = []
        var config = SecretScanConfig()
        let allowlistPath = Self.inside(workspace, inputs["allowlist"] ?? ".secret-scan-allowlist")
        if let allowlistPath, let data = FileManager.default.contents(atPath: allowlistPath) {
            let (allowlist, problems) = SecretAllowlist.parse(String(decoding: data, as: UTF8.self))
            // The allowlist names fingerprints, which look like secrets themselves: never scan it.
            let relative = inputs["allowlist"] ?? ".secret-scan-allowlist"
            config.allowlist = allowlist.merging(SecretAllowlist(pathGlobs: [relative, "**/" + relative]))
            for problem in problems { lines.append("allowlist: \(problem)") }
            lines.append("using allowlist \(inputs["allowlist"] ?? ".secret-scan-allowlist")")
        } else if inputs["allowlist"] != nil {
            return Outcome(failure: "allowlist '\(inputs["allowlist"]!)' not found in the workspace", lines: lines, findings: [])
        }
        let result = SecretScanner.scan(root: root, config: config)
        for finding in result.findings { lines.append("\(finding.description)  [\(finding.fingerprint)]") }
        lines.append("secret scan: \(result.filesScanned) files scanned, \(result.skipped.count) skipped, \(result.findings.count) finding(s)")
        let records = result.findings.map {
            ScanFindingRecord(runID: runID, jobKey: jobKey, scanner: "secret-scan", severity: "high", location: "\($0.file):\($0.line):\($0.column)", message: "\($0.rule) \($0.masked) [\($0.fingerprint)]")
        }
        if !result.findings.isEmpty {
            lines.append("to accept a false positive, add its fingerprint to .secret-scan-allowlist")
            return Outcome(failure: "secret scan found \(result.findings.count) secret(s)", lines: lines, findings: records)
        }
        return Outcome(failure: nil, lines: lines, findings: records)
    }

    func dependencyCheck(_ inputs: [String: String], workspace: String, runID: Int64, jobKey: String) -> Outcome {
        guard let root = Self.inside(workspace, inputs["path"]) else {
            return Outcome(failure: "`with.path` must stay inside the workspace", lines: [], findings: [])
        }
        guard let advisoriesPath = Self.inside(workspace, inputs["advisories"]), let data = FileManager.default.contents(atPath: advisoriesPath) else {
            return Outcome(failure: "advisory file '\(inputs["advisories"] ?? "")' not found in the workspace", lines: [], findings: [])
        }
        let thresholdName = inputs["severity"] ?? "high"
        guard let threshold = Severity(name: thresholdName) else {
            return Outcome(failure: "unknown severity '\(thresholdName)'; use low, moderate, high or critical", lines: [], findings: [])
        }
        let advisories: [Advisory]
        do { advisories = try DependencyCheck.loadAdvisories(data) } catch {
            return Outcome(failure: "cannot read advisories: \(error)", lines: [], findings: [])
        }
        let (components, problems) = LockfileScanner.scan(root: root)
        var lines = problems.map { "lockfile: \($0)" }
        let findings = DependencyCheck.check(components: components, advisories: advisories)
        var blocking = 0
        for finding in findings {
            let blocks = finding.severity >= threshold
            if blocks { blocking += 1 }
            let fix = finding.fixedIn.map { "; fixed in \($0)" } ?? ""
            lines.append("\(blocks ? "FAIL" : "warn") \(finding.severity) \(finding.advisoryID) \(finding.component.name)@\(finding.component.version) (\(finding.component.sourceFile))\(fix): \(finding.summary)")
        }
        lines.append("dependency check: \(components.count) components, \(advisories.count) advisories, \(findings.count) finding(s), \(blocking) at or above \(threshold)")
        let records = findings.map {
            ScanFindingRecord(runID: runID, jobKey: jobKey, scanner: "dependency-check", severity: "\($0.severity)", location: "\($0.component.sourceFile): \($0.component.name)@\($0.component.version)", message: "\($0.advisoryID): \($0.summary)" + ($0.fixedIn.map { " (fixed in \($0))" } ?? ""))
        }
        return Outcome(failure: blocking > 0 ? "\(blocking) vulnerable dependenc\(blocking == 1 ? "y" : "ies") at or above \(threshold)" : nil, lines: lines, findings: records)
    }
}
