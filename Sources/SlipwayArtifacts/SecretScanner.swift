import Crypto
import Foundation
import SlipwayCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Findings

/// One secret found by `SecretScanner`.
///
/// No field ever holds the raw secret: `masked` keeps at most its first 4 characters, and `fingerprint`
/// holds only a truncated SHA-256 of it.
///
/// Positions: `line` is 1-based (lines end at `\n`); `column` is 1-based and counted in Swift `Character`s
/// (extended grapheme clusters) from the start of the line, so `é`, `日` or an emoji before the match each
/// count as one column, and a tab counts as one. A UTF-8 byte order mark at the start of the file is not
/// counted. Bytes that are not valid UTF-8 count one column each.
public struct SecretFinding: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Rule id, one of `SecretScanner.ruleIDs`.
    public var rule: String
    /// Path of the file, relative to the scanned root (as given to `scan(data:file:config:)`).
    public var file: String
    /// 1-based line number.
    public var line: Int
    /// 1-based column, in Characters (see the type's documentation).
    public var column: Int
    /// The matched value masked: its first 4 characters + "…***", or just "***" when it is shorter than 12.
    public var masked: String
    /// Stable id for allowlisting: `<rule>:<file>:<first 16 hex digits of the SHA-256 of the value>`.
    public var fingerprint: String
    /// `<file>:<line>:<column>: <rule> <masked>`.
    public var description: String

    public init(rule: String, file: String, line: Int, column: Int, masked: String, fingerprint: String) {
        self.rule = rule
        self.file = file
        self.line = line
        self.column = column
        self.masked = masked
        self.fingerprint = fingerprint
        self.description = "\(file):\(line):\(column): \(rule) \(masked)"
    }

    init(rule: String, file: String, line: Int, column: Int, value: String) {
        self.init(rule: rule, file: file, line: line, column: column,
                  masked: Self.mask(value), fingerprint: Self.fingerprint(rule: rule, file: file, value: value))
    }

    /// Masks a secret value: the first 4 characters followed by "…***" when the value has at least 12
    /// characters, "***" otherwise. Never returns more than 4 characters of the value.
    public static func mask(_ value: String) -> String {
        if value.count < 12 { return "***" }
        return String(value.prefix(4)) + "…***"
    }

    /// `<rule>:<file>:<first 16 lowercase hex digits of SHA-256(value as UTF-8)>`.
    public static func fingerprint(rule: String, file: String, value: String) -> String {
        "\(rule):\(file):\(ScanSHA256.hex(Array(value.utf8)).prefix(16))"
    }
}

// MARK: - Configuration

/// Settings of a scan. `SecretScanConfig()` gives the defaults.
public struct SecretScanConfig: Sendable {
    /// Minimum Shannon entropy (bits per character) of a base64-alphabet token to report it as a
    /// `high-entropy-string`. Default 4.0.
    public var entropyThreshold: Double
    /// Minimum Shannon entropy of a hex token (`[0-9a-f]` or `[0-9A-F]`). Default 3.0.
    public var hexEntropyThreshold: Double
    /// Minimum length of a token considered by the `high-entropy-string` rule. Default 20.
    public var minimumEntropyLength: Int
    /// Files larger than this are skipped by `scan(root:config:)`. Default 5 MiB.
    public var maxFileBytes: Int
    /// Findings, rules and paths to ignore.
    public var allowlist: SecretAllowlist
    /// Directory names never entered by `scan(root:config:)`, at any depth.
    public var skipDirectories: Set<String>

    public static let defaultSkipDirectories: Set<String> = [".git", ".slipway", "node_modules"]

    public init(entropyThreshold: Double = 4.0,
                hexEntropyThreshold: Double = 3.0,
                minimumEntropyLength: Int = 20,
                maxFileBytes: Int = 5 * 1024 * 1024,
                allowlist: SecretAllowlist = .empty,
                skipDirectories: Set<String> = SecretScanConfig.defaultSkipDirectories) {
        self.entropyThreshold = entropyThreshold
        self.hexEntropyThreshold = hexEntropyThreshold
        self.minimumEntropyLength = minimumEntropyLength
        self.maxFileBytes = maxFileBytes
        self.allowlist = allowlist
        self.skipDirectories = skipDirectories
    }
}

/// What a scan ignores.
///
/// File format (UTF-8 text, one entry per line; blank lines and lines starting with `#` are ignored;
/// leading and trailing whitespace is trimmed):
/// - a finding's fingerprint, `<rule>:<file>:<16 hex digits>` (as printed in `SecretFinding.fingerprint`):
///   ignore that value in that file;
/// - `path:GLOB`: skip the files matching GLOB (relative to the scanned root), with `.gitignore`-like
///   rules: `*` and `?` do not cross `/`, `**` does; a glob with no `/` (other than a trailing one)
///   matches a file or directory name at any depth, otherwise it is anchored at the root (a leading `/`
///   anchors too); a trailing `/` matches directories only; a matching directory covers everything
///   beneath it (`vendor/`, `Tests/Fixtures`, `*.pem`, `src/**/*.min.js`);
/// - `rule:RULE-ID`: disable a rule (see `SecretScanner.ruleIDs`);
/// - `regex:PATTERN`: ignore any finding whose value contains a match of PATTERN (NSRegularExpression
///   syntax; anchor with `^…$` to match whole values).
///
/// Problems never quote the offending line, which could hold a pasted secret.
public struct SecretAllowlist: Sendable, Equatable {
    public private(set) var fingerprints: Set<String>
    public private(set) var pathGlobs: [String]
    public private(set) var disabledRules: Set<String>
    private var regexes: [ScanRegex]

    /// The `regex:` patterns, in file order.
    public var valuePatterns: [String] { regexes.map(\.pattern) }

    public static let empty = SecretAllowlist()

    public init(fingerprints: Set<String> = [], pathGlobs: [String] = [], disabledRules: Set<String> = []) {
        self.fingerprints = fingerprints
        self.pathGlobs = pathGlobs
        self.disabledRules = disabledRules
        self.regexes = []
    }

    public var isEmpty: Bool {
        fingerprints.isEmpty && pathGlobs.isEmpty && disabledRules.isEmpty && regexes.isEmpty
    }

    /// Parses an allowlist file. Entries that cannot be used are left out and reported in `problems`
    /// as `line N: …`.
    public static func parse(_ text: String) -> (SecretAllowlist, problems: [String]) {
        var list = SecretAllowlist()
        var problems: [String] = []
        let known = Set(SecretScanner.ruleIDs)
        var lineNumber = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let entry = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if entry.isEmpty || entry.hasPrefix("#") { continue }
            if entry.hasPrefix("path:") {
                let glob = String(entry.dropFirst(5)).trimmingCharacters(in: .whitespaces)
                if glob.isEmpty {
                    problems.append("line \(lineNumber): empty path glob")
                } else {
                    list.pathGlobs.append(glob)
                }
            } else if entry.hasPrefix("rule:") {
                let rule = String(entry.dropFirst(5)).trimmingCharacters(in: .whitespaces)
                if known.contains(rule) {
                    list.disabledRules.insert(rule)
                } else {
                    problems.append("line \(lineNumber): unknown rule id (known: \(SecretScanner.ruleIDs.joined(separator: ", ")))")
                }
            } else if entry.hasPrefix("regex:") {
                let pattern = String(entry.dropFirst(6))
                if pattern.isEmpty {
                    problems.append("line \(lineNumber): empty regex")
                } else if let regex = ScanRegex(pattern) {
                    list.regexes.append(regex)
                } else {
                    problems.append("line \(lineNumber): invalid regular expression")
                }
            } else if let rule = Self.fingerprintRule(entry) {
                if known.contains(rule) {
                    list.fingerprints.insert(entry)
                } else {
                    problems.append("line \(lineNumber): fingerprint names an unknown rule")
                }
            } else {
                problems.append("line \(lineNumber): unrecognised entry (expected a fingerprint, path:GLOB, rule:RULE-ID or regex:PATTERN)")
            }
        }
        return (list, problems)
    }

    /// All entries of both lists.
    public func merging(_ other: SecretAllowlist) -> SecretAllowlist {
        var out = self
        out.fingerprints.formUnion(other.fingerprints)
        out.pathGlobs += other.pathGlobs.filter { !pathGlobs.contains($0) }
        out.disabledRules.formUnion(other.disabledRules)
        out.regexes += other.regexes.filter { r in !regexes.contains(r) }
        return out
    }

    /// True when a `path:` entry matches this relative path (files matching are not scanned). A path
    /// ending in `/` is a directory.
    public func excludes(path: String) -> Bool {
        if pathGlobs.isEmpty { return false }
        let p = ScanGlob.normalise(path)
        return pathGlobs.contains { ScanGlob.matches(glob: $0, path: p) }
    }

    /// True when a `rule:` entry disables the rule.
    public func disables(rule: String) -> Bool { disabledRules.contains(rule) }

    func suppresses(fingerprint: String, value: String) -> Bool {
        if fingerprints.contains(fingerprint) { return true }
        return regexes.contains { $0.matches(value) }
    }

    /// `<rule>:<file>:<16 hex>` → rule, or nil when the entry does not have that shape.
    private static func fingerprintRule(_ entry: String) -> String? {
        guard let first = entry.firstIndex(of: ":"), let last = entry.lastIndex(of: ":"), first < last else { return nil }
        let hash = entry[entry.index(after: last)...]
        guard hash.count == 16, hash.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        let file = entry[entry.index(after: first)..<last]
        guard !file.isEmpty else { return nil }
        return String(entry[..<first])
    }
}

/// A compiled allowlist regex. NSRegularExpression is immutable once built and safe to use from
/// several threads at once (documented by Apple; the Linux implementation keeps no mutable state
/// outside a match call), hence `@unchecked Sendable`.
private final class ScanRegexBox: @unchecked Sendable {
    let regex: NSRegularExpression
    init(_ regex: NSRegularExpression) { self.regex = regex }
}

private struct ScanRegex: Sendable, Equatable {
    let pattern: String
    private let box: ScanRegexBox

    init?(_ pattern: String) {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return nil }
        self.pattern = pattern
        self.box = ScanRegexBox(regex)
    }

    func matches(_ value: String) -> Bool {
        let ns = value as NSString
        return box.regex.firstMatch(in: value, range: NSRange(location: 0, length: ns.length)) != nil
    }

    static func == (a: ScanRegex, b: ScanRegex) -> Bool { a.pattern == b.pattern }
}

// MARK: - Scanner

/// Finds secrets in text: known token formats (like gitleaks and trufflehog), password-like assignments,
/// and high-entropy strings.
///
/// Rules (`ruleIDs`):
/// - `aws-access-key-id`: `(A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}`;
/// - `aws-secret-access-key`: 40 characters of `[A-Za-z0-9/+]` assigned to `aws_secret_access_key`
///   (any case, `_`, `-`, `.` or nothing between the words, `access` optional);
/// - `github-token`: `gh[pousr]_` + 36 alphanumerics, or `github_pat_` + 82 of `[A-Za-z0-9_]`;
/// - `gitlab-token`: `glpat-` + 20 or more of `[A-Za-z0-9_-]`;
/// - `slack-token`: `xox[baprs]-` + 10 or more of `[A-Za-z0-9-]` including a digit;
/// - `slack-webhook-url`: `hooks.slack.com/(services|workflows|triggers)/` + 20 or more URL characters;
/// - `stripe-secret-key`: `sk_live_` or `rk_live_` + 24 or more alphanumerics;
/// - `google-api-key`: `AIza` + 35 of `[A-Za-z0-9_-]`;
/// - `private-key`: a PEM/PGP private key header (RSA, EC, OPENSSH, DSA, PGP, ENCRYPTED or none) followed by
///   at least 64 base64 characters of key material (headers quoted in prose are not reported);
/// - `jwt`: `eyJ…` `.` `eyJ…` `.` signature (base64url);
/// - `npm-token`: `npm_` + 36 alphanumerics;
/// - `pypi-token`: `pypi-AgEIcHlwaS5vcmc` + 50 or more of `[A-Za-z0-9_-]`;
/// - `generic-secret`: `password`, `passwd`, `secret`, `token` or `api_key`/`api-key`/`apikey` (any case,
///   possibly followed by more name characters and a closing quote) assigned with `=`, `:`, `:=` or `=>`
///   a value of 8 or more characters that looks like a secret: not code (no brackets, `$`, `%`, …), not a
///   path or URL, not a bare name (letters and `_ - . / :` only), not a placeholder (`changeme`,
///   `<…>`, `****`, `your_…`), unquoted not a code reference (`FTS5Tokenizer`, `Curve25519.KeySize`; a
///   name mixing in two or more digit groups, like `Passw0rd123`, still counts), and either with an
///   entropy of at least 3 bits/character and two or more character classes, or at least 24 characters
///   long with three classes;
/// - `high-entropy-string`: a token of the base64/base64url alphabet (or hex) of at least
///   `minimumEntropyLength` characters whose Shannon entropy reaches the threshold. To keep false positives
///   low on source trees, a base64 token must mix upper case, lower case and digits (two of each),
///   alternate between them like random text does, have less than 60 % of its characters in word-like
///   runs (`With`, `Since`, `SHA`) and few `_ - /` separators (identifiers and paths fail these; about
///   9 in 10 random tokens pass); a hex token (one case) must mix digits and letters. Ignored: runs of one character, alphabet sequences, UUIDs, tokens on a line that
///   mentions a digest or revision (`sha`, `commit`, `digest`, `checksum`, `integrity`, `rev`, `ref`, `hash`,
///   `version`, `git`, `tag`, `uuid`, `fingerprint`, `gpg`, … anywhere in the line, any case), tokens right
///   after `#` or `@` (`repo#<commit>`), C++ mangled names, `data:…;base64,` payloads, SRI hashes,
///   go.sum `h1:` hashes, PEM blocks, and lockfiles and Xcode project files (`go.sum`, `package-lock.json`,
///   `Package.resolved`, `*.lock`, `*.pbxproj`, …), where hashes are expected.
///
/// A line containing `slipway:allow-secret` (for example in a comment) is not reported.
/// A match of a known format is not reported again by `generic-secret` or `high-entropy-string`.
public enum SecretScanner {
    /// Every rule id, in reporting priority.
    public static let ruleIDs: [String] = [
        "aws-access-key-id", "aws-secret-access-key", "github-token", "gitlab-token", "slack-token",
        "slack-webhook-url", "stripe-secret-key", "google-api-key", "private-key", "jwt", "npm-token",
        "pypi-token", "generic-secret", "high-entropy-string",
    ]

    /// Marker that silences a whole line.
    public static let inlineAllowMarker = "slipway:allow-secret"

    /// Scans one file's content. `file` is the path used in findings and matched against the allowlist's
    /// `path:` globs (a file they exclude gives no findings). Binary content is scanned as is (the
    /// directory walk is what skips binary files). Findings are sorted by line and column.
    public static func scan(data: Data, file: String, config: SecretScanConfig) -> [SecretFinding] {
        if config.allowlist.excludes(path: file) { return [] }
        var engine = ScanEngine(config: config, file: file)
        data.withUnsafeBytes { raw in
            engine.run(raw.bindMemory(to: UInt8.self))
        }
        return engine.findings.sorted { ($0.line, $0.column, $0.rule) < ($1.line, $1.column, $1.rule) }
    }

    /// Walks a directory and scans every regular file in it. Skips the directories named in
    /// `config.skipDirectories` (`.git`, `.slipway`, `node_modules` by default), symbolic links (never
    /// followed), binary files (a NUL byte in the first 8 KiB), files over `maxFileBytes`, files excluded by
    /// the allowlist and unreadable files; each skipped file is listed in `skipped` as
    /// `<relative path> (<reason>)`. `root` may also name a single file. Findings are sorted by
    /// file/line/column; `filesScanned` counts the files actually scanned.
    public static func scan(root: String, config: SecretScanConfig) -> (findings: [SecretFinding], filesScanned: Int, skipped: [String]) {
        var files: [(path: String, relative: String)] = []
        var skipped: [String] = []
        var st = stat()
        if lstat(root, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
            files.append((root, (root as NSString).lastPathComponent))
        } else {
            walk(directory: root, relative: "", config: config, files: &files, skipped: &skipped)
        }
        var findings: [SecretFinding] = []
        var scanned = 0
        for (path, relative) in files {
            if config.allowlist.excludes(path: relative) {
                skipped.append("\(relative) (allowlisted)")
                continue
            }
            guard lstat(path, &st) == 0 else {
                skipped.append("\(relative) (unreadable)")
                continue
            }
            if Int(st.st_size) > config.maxFileBytes {
                skipped.append("\(relative) (too large: \(st.st_size) bytes)")
                continue
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                skipped.append("\(relative) (unreadable)")
                continue
            }
            if data.count > config.maxFileBytes {
                skipped.append("\(relative) (too large: \(data.count) bytes)")
                continue
            }
            if isBinary(data) {
                skipped.append("\(relative) (binary)")
                continue
            }
            scanned += 1
            findings += scan(data: data, file: relative, config: config)
        }
        findings.sort { ($0.file, $0.line, $0.column, $0.rule) < ($1.file, $1.line, $1.column, $1.rule) }
        skipped.sort()
        return (findings, scanned, skipped)
    }

    /// A NUL byte in the first 8 KiB.
    static func isBinary(_ data: Data) -> Bool {
        data.prefix(8192).contains(0)
    }

    private static func walk(directory: String, relative: String, config: SecretScanConfig,
                             files: inout [(path: String, relative: String)], skipped: inout [String]) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            if !relative.isEmpty { skipped.append("\(relative) (unreadable)") }
            return
        }
        for name in names {
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else {
                skipped.append("\(rel) (unreadable)")
                continue
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                if config.skipDirectories.contains(name) { continue }
                if config.allowlist.excludes(path: rel + "/") {
                    skipped.append("\(rel)/ (allowlisted)")
                    continue
                }
                walk(directory: path, relative: rel, config: config, files: &files, skipped: &skipped)
            case S_IFREG:
                files.append((path, rel))
            case S_IFLNK:
                skipped.append("\(rel) (symbolic link)")
            default:
                continue // sockets, fifos, devices
            }
        }
    }
}

// MARK: - Engine

private struct ScanEngine {
    let config: SecretScanConfig
    let file: String
    let enabled: [Bool]
    let entropyEnabled: Bool
    let isLockfile: Bool
    var findings: [SecretFinding] = []

    // per line
    private var covered: [(Int, Int)] = []
    private var pending: [(rule: Int, start: Int, end: Int)] = []
    private var skipUntil = 0
    private var lineNumber = 0
    private var lineStart = 0
    private var lineEnd = 0
    private var lineMentionsDigestCache: Bool? = nil

    init(config: SecretScanConfig, file: String) {
        self.config = config
        self.file = file
        self.enabled = SecretScanner.ruleIDs.map { !config.allowlist.disables(rule: $0) }
        self.entropyEnabled = enabled[R.highEntropy]
        let base = (file as NSString).lastPathComponent.lowercased()
        self.isLockfile = ScanEngine.lockfiles.contains(base) || base.hasSuffix(".lock") || base.hasSuffix(".sum")
            || base.hasSuffix(".pbxproj") || base.hasSuffix(".xcscheme")
    }

    static let lockfiles: Set<String> = [
        "go.sum", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "package.resolved",
        "cargo.lock", "gemfile.lock", "poetry.lock", "composer.lock", "pipfile.lock", "uv.lock", "flake.lock",
    ]

    enum R {
        static let awsKeyID = 0, awsSecret = 1, github = 2, gitlab = 3, slackToken = 4, slackWebhook = 5
        static let stripe = 6, google = 7, privateKey = 8, jwt = 9, npm = 10, pypi = 11, generic = 12
        static let highEntropy = 13
    }

    mutating func run(_ buf: UnsafeBufferPointer<UInt8>) {
        let n = buf.count
        var i = 0
        // A UTF-8 byte order mark is not part of the first line's columns.
        if n >= 3, buf[0] == 0xEF, buf[1] == 0xBB, buf[2] == 0xBF { i = 3 }
        lineNumber = 0
        while i <= n {
            if i == n && i > 0 && buf[n - 1] == 0x0A { break }
            var e = i
            while e < n && buf[e] != 0x0A { e += 1 }
            lineNumber += 1
            var le = e
            if le > i && buf[le - 1] == 0x0D { le -= 1 }
            scanLine(buf, i, le)
            i = e + 1
            if e == n { break }
        }
    }

    // MARK: line

    private mutating func scanLine(_ buf: UnsafeBufferPointer<UInt8>, _ ls: Int, _ le: Int) {
        lineStart = ls
        lineEnd = le
        lineMentionsDigestCache = nil
        covered.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        if skipUntil >= le { return }
        var from = ls
        if skipUntil > ls {
            covered.append((ls, skipUntil))
            from = skipUntil
        }
        if le - from < 8 { return }
        let allowed = contains(buf, ls, le, ScanEngine.allowMarker)

        knownFormats(buf, from, le)
        keywordRules(buf, from, le)
        if entropyEnabled && !isLockfile { highEntropy(buf, from, le) }

        if allowed || pending.isEmpty { return }
        pending.sort { $0.start < $1.start }
        // Columns: count Characters incrementally from the start of the line.
        var col = 1
        var pos = ls
        for p in pending {
            if p.start > pos {
                col += String(decoding: UnsafeBufferPointer(rebasing: buf[pos..<p.start]), as: UTF8.self).count
                pos = p.start
            }
            let value = String(decoding: UnsafeBufferPointer(rebasing: buf[p.start..<p.end]), as: UTF8.self)
            let rule = SecretScanner.ruleIDs[p.rule]
            let finding = SecretFinding(rule: rule, file: file, line: lineNumber, column: col, value: value)
            if config.allowlist.suppresses(fingerprint: finding.fingerprint, value: value) { continue }
            findings.append(finding)
        }
    }

    private mutating func add(_ rule: Int, _ s: Int, _ e: Int) {
        covered.append((s, e))
        if enabled[rule] { pending.append((rule, s, e)) }
    }

    private func isCovered(_ s: Int, _ e: Int) -> Bool {
        for (a, b) in covered where s < b && a < e { return true }
        return false
    }

    // MARK: known formats

    private mutating func knownFormats(_ buf: UnsafeBufferPointer<UInt8>, _ ls: Int, _ le: Int) {
        var i = ls
        while i < le {
            let b = buf[i]
            var end = -1
            switch b {
            case UInt8(ascii: "A"):
                if let e = awsKeyID(buf, i, ls, le) { add(R.awsKeyID, i, e); end = e }
                else if let e = googleKey(buf, i, ls, le) { add(R.google, i, e); end = e }
            case UInt8(ascii: "g"):
                if let e = githubToken(buf, i, ls, le) { add(R.github, i, e); end = e }
                else if let e = gitlabToken(buf, i, ls, le) { add(R.gitlab, i, e); end = e }
            case UInt8(ascii: "x"):
                if let e = slackToken(buf, i, ls, le) { add(R.slackToken, i, e); end = e }
            case UInt8(ascii: "h"):
                if let (s, e) = slackWebhook(buf, i, ls, le) {
                    // The URL may start a few bytes back ("https://"): drop anything already covered there.
                    add(R.slackWebhook, s, e); end = e
                }
            case UInt8(ascii: "s"), UInt8(ascii: "r"):
                if let e = stripeKey(buf, i, ls, le) { add(R.stripe, i, e); end = e }
            case UInt8(ascii: "-"):
                if let (e, isPrivate) = pemBlock(buf, i, le) {
                    let lineEnd = min(e, le)
                    if isPrivate { add(R.privateKey, i, lineEnd) } else { covered.append((i, lineEnd)) }
                    if isPrivate, enabled[R.privateKey], e > le {
                        // The finding's value is the whole block; remember its real end.
                        pending[pending.count - 1].end = e
                    }
                    skipUntil = max(skipUntil, e)
                    end = lineEnd
                }
            case UInt8(ascii: "e"):
                if let e = jwt(buf, i, ls, le) { add(R.jwt, i, e); end = e }
            case UInt8(ascii: "n"):
                if let e = npmToken(buf, i, ls, le) { add(R.npm, i, e); end = e }
            case UInt8(ascii: "p"):
                if let e = pypiToken(buf, i, ls, le) { add(R.pypi, i, e); end = e }
            default:
                break
            }
            i = end > i ? end : i + 1
        }
    }

    private func awsKeyID(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 20 <= le, i == ls || !ascAlnum(buf[i - 1]) else { return nil }
        let b1 = buf[i + 1], b2 = buf[i + 2], b3 = buf[i + 3]
        let prefixOK: Bool
        switch (b1, b2, b3) {
        case (UInt8(ascii: "K"), UInt8(ascii: "I"), UInt8(ascii: "A")),
             (UInt8(ascii: "S"), UInt8(ascii: "I"), UInt8(ascii: "A")),
             (UInt8(ascii: "B"), UInt8(ascii: "I"), UInt8(ascii: "A")),
             (UInt8(ascii: "C"), UInt8(ascii: "C"), UInt8(ascii: "A")):
            prefixOK = true
        case (UInt8(ascii: "3"), UInt8(ascii: "T"), _):
            prefixOK = ascUpper(b3) || ascDigit(b3)
        default:
            prefixOK = false
        }
        guard prefixOK else { return nil }
        for k in (i + 4)..<(i + 20) where !ascBase32(buf[k]) { return nil }
        if i + 20 < le && ascAlnum(buf[i + 20]) { return nil }
        return i + 20
    }

    private func googleKey(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 39 <= le, i == ls || !ascURLSafe(buf[i - 1]), has(buf, i, le, ScanEngine.aiza) else { return nil }
        for k in (i + 4)..<(i + 39) where !ascURLSafe(buf[k]) { return nil }
        if i + 39 < le && ascURLSafe(buf[i + 39]) { return nil }
        return i + 39
    }

    private func githubToken(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i == ls || !ascWord(buf[i - 1]) else { return nil }
        if i + 40 <= le, buf[i + 1] == UInt8(ascii: "h"), buf[i + 3] == UInt8(ascii: "_") {
            switch buf[i + 2] {
            case UInt8(ascii: "p"), UInt8(ascii: "o"), UInt8(ascii: "u"), UInt8(ascii: "s"), UInt8(ascii: "r"):
                for k in (i + 4)..<(i + 40) where !ascAlnum(buf[k]) { return nil }
                if i + 40 < le && ascWord(buf[i + 40]) { return nil }
                return i + 40
            default:
                return nil
            }
        }
        if i + 93 <= le, has(buf, i, le, ScanEngine.githubPAT) {
            for k in (i + 11)..<(i + 93) where !ascWord(buf[k]) { return nil }
            if i + 93 < le && ascWord(buf[i + 93]) { return nil }
            return i + 93
        }
        return nil
    }

    private func gitlabToken(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 26 <= le, i == ls || !ascAlnum(buf[i - 1]), has(buf, i, le, ScanEngine.glpat) else { return nil }
        let e = run(buf, i + 6, le, ascURLSafe)
        return e - (i + 6) >= 20 ? e : nil
    }

    private func slackToken(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 15 <= le, i == ls || !ascAlnum(buf[i - 1]),
              buf[i + 1] == UInt8(ascii: "o"), buf[i + 2] == UInt8(ascii: "x"), buf[i + 4] == UInt8(ascii: "-")
        else { return nil }
        switch buf[i + 3] {
        case UInt8(ascii: "b"), UInt8(ascii: "a"), UInt8(ascii: "p"), UInt8(ascii: "r"), UInt8(ascii: "s"): break
        default: return nil
        }
        let e = run(buf, i + 5, le) { ascAlnum($0) || $0 == UInt8(ascii: "-") }
        guard e - (i + 5) >= 10 else { return nil }
        for k in (i + 5)..<e where ascDigit(buf[k]) { return e }
        return nil
    }

    private func slackWebhook(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> (Int, Int)? {
        guard has(buf, i, le, ScanEngine.slackHooks) else { return nil }
        var j = i + ScanEngine.slackHooks.count
        var matchedKind = false
        for kind in ScanEngine.slackKinds where has(buf, j, le, kind) {
            j += kind.count
            matchedKind = true
            break
        }
        guard matchedKind else { return nil }
        let e = run(buf, j, le) { ascAlnum($0) || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") }
        guard e - j >= 20 else { return nil }
        var s = i
        if i >= ls + 8, has(buf, i - 8, le, ScanEngine.https) { s = i - 8 }
        else if i >= ls + 7, has(buf, i - 7, le, ScanEngine.http) { s = i - 7 }
        else if i > ls, ascAlnum(buf[i - 1]) || buf[i - 1] == UInt8(ascii: ".") { return nil }
        if isCovered(s, i) { s = i }
        return (s, e)
    }

    private func stripeKey(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 32 <= le, i == ls || !ascWord(buf[i - 1]), buf[i + 1] == UInt8(ascii: "k"),
              has(buf, i + 2, le, ScanEngine.stripeLive) else { return nil }
        let e = run(buf, i + 8, le, ascAlnum)
        return e - (i + 8) >= 24 ? e : nil
    }

    private func jwt(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 30 <= le, i == ls || !(ascURLSafe(buf[i - 1]) || buf[i - 1] == UInt8(ascii: ".")),
              has(buf, i, le, ScanEngine.eyJ) else { return nil }
        let h = run(buf, i + 3, le, ascURLSafe)
        guard h - (i + 3) >= 10, h < le, buf[h] == UInt8(ascii: "."), has(buf, h + 1, le, ScanEngine.eyJ) else { return nil }
        let p = run(buf, h + 4, le, ascURLSafe)
        guard p - (h + 4) >= 10, p < le, buf[p] == UInt8(ascii: ".") else { return nil }
        return run(buf, p + 1, le, ascURLSafe)
    }

    private func npmToken(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        guard i + 40 <= le, i == ls || !ascWord(buf[i - 1]), has(buf, i, le, ScanEngine.npm) else { return nil }
        for k in (i + 4)..<(i + 40) where !ascAlnum(buf[k]) { return nil }
        if i + 40 < le && ascWord(buf[i + 40]) { return nil }
        return i + 40
    }

    private func pypiToken(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ ls: Int, _ le: Int) -> Int? {
        let prefix = ScanEngine.pypi
        guard i + prefix.count + 50 <= le, i == ls || !ascAlnum(buf[i - 1]), has(buf, i, le, prefix) else { return nil }
        let e = run(buf, i + prefix.count, le, ascURLSafe)
        return e - (i + prefix.count) >= 50 ? e : nil
    }

    /// A PEM/PGP block starting at `i` ("-----BEGIN …-----"): returns the end of the block (past the
    /// END line's closing dashes, or where key material stops) and whether it is a private key with at
    /// least 64 base64 characters of material. Certificates and public keys are returned too (not
    /// private) so that their base64 bodies are not reported as high-entropy strings.
    private func pemBlock(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ le: Int) -> (Int, Bool)? {
        guard has(buf, i, le, ScanEngine.begin) else { return nil }
        var j = i + ScanEngine.begin.count
        // Label: upper-case words up to the closing dashes.
        let labelStart = j
        while j < le, ascUpper(buf[j]) || buf[j] == UInt8(ascii: " ") || ascDigit(buf[j]) { j += 1 }
        guard j > labelStart, has(buf, j, le, ScanEngine.dashes) else { return nil }
        let label = Array(UnsafeBufferPointer(rebasing: buf[labelStart..<j]))
        j += 5
        var isPrivate = false
        for l in ScanEngine.privateLabels where label == l { isPrivate = true; break }
        // Key material: base64 lines (possibly escaped "\n" in a string literal), armor headers.
        let n = buf.count
        let limit = min(n, j + 1 << 20)
        var material = 0
        var k = j
        var end = j
        var atLineStart = false
        scanning: while k < limit {
            let c = buf[k]
            if c == 0x0A || c == 0x0D {
                atLineStart = true
                k += 1
                continue
            }
            if c == UInt8(ascii: "\\"), k + 1 < limit, buf[k + 1] == UInt8(ascii: "n") || buf[k + 1] == UInt8(ascii: "r") {
                atLineStart = true
                k += 2
                continue
            }
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { k += 1; continue }
            if c == UInt8(ascii: "-") {
                if has(buf, k, limit, ScanEngine.endMarker) {
                    // Past "-----END <label>-----".
                    var m = k + ScanEngine.endMarker.count
                    while m < limit, buf[m] != 0x0A, !has(buf, m, limit, ScanEngine.dashes) { m += 1 }
                    end = has(buf, m, limit, ScanEngine.dashes) ? m + 5 : m
                    break scanning
                }
            }
            if atLineStart {
                // Armor header ("Proc-Type: 4,ENCRYPTED", "Version: …"): skip the line.
                var m = k
                while m < limit, ascAlnum(buf[m]) || buf[m] == UInt8(ascii: "-") { m += 1 }
                if m > k, m < limit, buf[m] == UInt8(ascii: ":") {
                    while m < limit, buf[m] != 0x0A, !(buf[m] == UInt8(ascii: "\\") && m + 1 < limit && buf[m + 1] == UInt8(ascii: "n")) { m += 1 }
                    k = m
                    continue
                }
                atLineStart = false
            }
            if ascAlnum(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: "/") {
                material += 1
            } else if c != UInt8(ascii: "=") {
                break scanning
            }
            k += 1
            end = k
        }
        return (max(end, j), isPrivate && material >= 64)
    }

    // MARK: keyword rules

    private mutating func keywordRules(_ buf: UnsafeBufferPointer<UInt8>, _ ls: Int, _ le: Int) {
        var i = ls
        while i < le {
            let c = buf[i] | 0x20
            var kwEnd = -1
            var isAWS = false
            switch c {
            case UInt8(ascii: "a"):
                if let e = awsSecretName(buf, i, le) { kwEnd = e; isAWS = true }
                else if hasLower(buf, i, le, ScanEngine.kwApiKey) || hasLower(buf, i, le, ScanEngine.kwApiKey2) { kwEnd = i + 7 }
                else if hasLower(buf, i, le, ScanEngine.kwApikey) { kwEnd = i + 6 }
            case UInt8(ascii: "p"):
                if hasLower(buf, i, le, ScanEngine.kwPassword) { kwEnd = i + 8 }
                else if hasLower(buf, i, le, ScanEngine.kwPasswd) { kwEnd = i + 6 }
            case UInt8(ascii: "s"):
                if hasLower(buf, i, le, ScanEngine.kwSecret) { kwEnd = i + 6 }
            case UInt8(ascii: "t"):
                if hasLower(buf, i, le, ScanEngine.kwToken) { kwEnd = i + 5 }
            default:
                break
            }
            if kwEnd < 0 { i += 1; continue }
            if isAWS {
                if let (vs, ve, _) = assignedValue(buf, kwEnd, le, allowNameSuffix: false), ve - vs == 40,
                   (vs..<ve).allSatisfy({ ascAlnum(buf[$0]) || buf[$0] == UInt8(ascii: "/") || buf[$0] == UInt8(ascii: "+") }),
                   !isCovered(vs, ve) {
                    add(R.awsSecret, vs, ve)
                    i = ve
                    continue
                }
                // Not an AWS secret: let "secret" inside the name be tried as a generic key.
                i += 1
                continue
            }
            if let (vs, ve, quoted) = assignedValue(buf, kwEnd, le, allowNameSuffix: true) {
                if !isCovered(vs, ve), looksLikeSecretValue(buf, vs, ve, quoted: quoted) {
                    add(R.generic, vs, ve)
                    i = ve
                    continue
                }
            }
            i = kwEnd
        }
    }

    /// "aws" [_-.]? "secret" [_-.]? ("access" [_-.]?)? "key", any case → end of the name.
    private func awsSecretName(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ le: Int) -> Int? {
        guard hasLower(buf, i, le, ScanEngine.kwAws) else { return nil }
        var j = i + 3
        func sep(_ j: inout Int) {
            if j < le, buf[j] == UInt8(ascii: "_") || buf[j] == UInt8(ascii: "-") || buf[j] == UInt8(ascii: ".") { j += 1 }
        }
        sep(&j)
        guard hasLower(buf, j, le, ScanEngine.kwSecret) else { return nil }
        j += 6
        sep(&j)
        if hasLower(buf, j, le, ScanEngine.kwAccess) {
            j += 6
            sep(&j)
        }
        guard hasLower(buf, j, le, ScanEngine.kwKey) else { return nil }
        return j + 3
    }

    /// After a key name ending at `j`: [more name chars] [closing quote] spaces operator spaces [quote]
    /// value. Returns the value's byte range (quotes excluded, trailing `,` `;` dropped when unquoted).
    private func assignedValue(_ buf: UnsafeBufferPointer<UInt8>, _ start: Int, _ le: Int, allowNameSuffix: Bool) -> (Int, Int, Bool)? {
        var j = start
        if allowNameSuffix {
            let limit = min(le, j + 24)
            while j < limit, ascWord(buf[j]) || buf[j] == UInt8(ascii: "-") { j += 1 }
            if j < le, ascWord(buf[j]) { return nil }
        } else if j < le, ascWord(buf[j]) {
            return nil
        }
        if j < le, buf[j] == UInt8(ascii: "\"") || buf[j] == UInt8(ascii: "'") { j += 1 }
        while j < le, buf[j] == UInt8(ascii: " ") || buf[j] == UInt8(ascii: "\t") { j += 1 }
        guard j < le else { return nil }
        switch buf[j] {
        case UInt8(ascii: "="):
            j += 1
            if j < le, buf[j] == UInt8(ascii: "=") || buf[j] == UInt8(ascii: "~") { return nil }
            if j < le, buf[j] == UInt8(ascii: ">") { j += 1 }
        case UInt8(ascii: ":"):
            j += 1
            if j < le, buf[j] == UInt8(ascii: ":") { return nil }
            if j < le, buf[j] == UInt8(ascii: "=") { j += 1 }
        default:
            return nil
        }
        while j < le, buf[j] == UInt8(ascii: " ") || buf[j] == UInt8(ascii: "\t") { j += 1 }
        var quote: UInt8 = 0
        if j < le, buf[j] == UInt8(ascii: "\"") || buf[j] == UInt8(ascii: "'") || buf[j] == UInt8(ascii: "`") {
            quote = buf[j]
            j += 1
        }
        let vs = j
        while j < le {
            let c = buf[j]
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") || c == UInt8(ascii: "`") { break }
            j += 1
        }
        var ve = j
        if quote == 0 {
            while ve > vs, buf[ve - 1] == UInt8(ascii: ",") || buf[ve - 1] == UInt8(ascii: ";") { ve -= 1 }
        }
        return ve > vs ? (vs, ve, quote != 0) : nil
    }

    private func looksLikeSecretValue(_ buf: UnsafeBufferPointer<UInt8>, _ vs: Int, _ ve: Int, quoted: Bool) -> Bool {
        guard ve - vs >= 8 else { return false }
        if !quoted && isCodeReference(buf, vs, ve) { return false }
        switch buf[vs] {
        case UInt8(ascii: "/"), UInt8(ascii: "."), UInt8(ascii: "~"), UInt8(ascii: "#"), UInt8(ascii: "&"),
             UInt8(ascii: "*"), UInt8(ascii: "@"), UInt8(ascii: "!"), UInt8(ascii: "?"), UInt8(ascii: "-"):
            return false
        default:
            break
        }
        var lower = 0, upper = 0, digit = 0, symbol = 0, nameOnly = true
        for k in vs..<ve {
            let c = buf[k]
            switch c {
            case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "["),
                 UInt8(ascii: "]"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "$"), UInt8(ascii: "%"),
                 UInt8(ascii: "\\"), UInt8(ascii: "|"):
                return false
            case UInt8(ascii: "a")...UInt8(ascii: "z"): lower += 1
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): upper += 1
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit += 1; nameOnly = false
            case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: ":"): break
            default: symbol += 1; nameOnly = false
            }
        }
        if nameOnly { return false }
        if contains(buf, vs, ve, ScanEngine.scheme) { return false }
        for p in ScanEngine.placeholders where containsLower(buf, vs, ve, p) { return false }
        let s = String(decoding: UnsafeBufferPointer(rebasing: buf[vs..<ve]), as: UTF8.self)
        guard s.count >= 8 else { return false }
        let classes = (lower > 0 ? 1 : 0) + (upper > 0 ? 1 : 0) + (digit > 0 ? 1 : 0) + (symbol > 0 ? 1 : 0)
        let h = entropy(buf, vs, ve)
        return (h >= 3.0 - 1e-9 && classes >= 2) || (ve - vs >= 24 && classes >= 3)
    }

    /// An unquoted identifier or member path (`FTS5Tokenizer`, `Curve25519.KeyAgreement.keySize`,
    /// `OpaquePointer?`): code, not a secret, unless it mixes digits in like generated text does
    /// (two or more digit groups and few dictionary-like words, as in `Passw0rd123`).
    private func isCodeReference(_ buf: UnsafeBufferPointer<UInt8>, _ vs: Int, _ ve: Int) -> Bool {
        var e = ve
        while e > vs, buf[e - 1] == UInt8(ascii: "?") || buf[e - 1] == UInt8(ascii: "!") { e -= 1 }
        guard e > vs else { return false }
        var atStart = true
        var digitGroups = 0
        var prevDigit = false
        for k in vs..<e {
            let c = buf[k]
            if c == UInt8(ascii: ".") {
                if atStart { return false }
                atStart = true
                prevDigit = false
                continue
            }
            if atStart {
                guard ascUpper(c) || ascLower(c) || c == UInt8(ascii: "_") else { return false }
                atStart = false
            } else if !ascWord(c) {
                return false
            }
            let d = ascDigit(c)
            if d && !prevDigit { digitGroups += 1 }
            prevDigit = d
        }
        if atStart { return false }
        return digitGroups < 2 || wordiness(buf, vs, e) >= 0.5
    }

    /// Fraction of the characters in dictionary-like runs: a capital followed by 2+ lower-case letters,
    /// 3+ lower-case letters, or 3+ capitals. About 0.3 for random base64 text (under 0.6 for 90 % of
    /// it), 0.6 or more for most names.
    private func wordiness(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Double {
        var covered = 0
        var k = s
        while k < e {
            let c = buf[k]
            if ascUpper(c) {
                var u = k
                while u < e, ascUpper(buf[u]) { u += 1 }
                var l = u
                while l < e, ascLower(buf[l]) { l += 1 }
                if l - u >= 2 {
                    // The last capital starts a word ("And" in "SHAAnd"); the ones before are an acronym.
                    if u - 1 - k >= 3 { covered += u - 1 - k }
                    covered += l - (u - 1)
                    k = l
                } else {
                    if u - k >= 3 { covered += u - k }
                    k = u
                }
            } else if ascLower(c) {
                var l = k
                while l < e, ascLower(buf[l]) { l += 1 }
                if l - k >= 3 { covered += l - k }
                k = l
            } else {
                k += 1
            }
        }
        return Double(covered) / Double(max(1, e - s))
    }

    // MARK: high entropy

    private mutating func highEntropy(_ buf: UnsafeBufferPointer<UInt8>, _ ls: Int, _ le: Int) {
        let minLen = max(1, config.minimumEntropyLength)
        var i = ls
        while i < le {
            guard ascB64(buf[i]) else { i += 1; continue }
            let s = i
            while i < le, ascB64(buf[i]) { i += 1 }
            var e = i
            var pad = 0
            while e < le, pad < 2, buf[e] == UInt8(ascii: "=") { e += 1; pad += 1 }
            if pad > 0, e < le, ascB64(buf[e]) || buf[e] == UInt8(ascii: "=") { e = i } // "a=b": not padding
            if i - s >= minLen, !isCovered(s, e), isHighEntropy(buf, s, i) {
                add(R.highEntropy, s, e)
            }
            i = max(e, i)
        }
    }

    private mutating func isHighEntropy(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        var upper = 0, lower = 0, digit = 0, hexLetters = 0, other = 0, hexUpper = 0
        for k in s..<e {
            let c = buf[k]
            if ascDigit(c) { digit += 1 }
            else if ascLower(c) { lower += 1; if c <= UInt8(ascii: "f") { hexLetters += 1 } }
            else if ascUpper(c) { upper += 1; if c <= UInt8(ascii: "F") { hexLetters += 1; hexUpper += 1 } }
            else { other += 1 }
        }
        let length = e - s
        let isHex = other == 0 && hexLetters == upper + lower && (upper == 0 || lower == 0)
        if isHex {
            guard digit > 0, hexLetters > 0 else { return false }
            guard entropy(buf, s, e) >= config.hexEntropyThreshold else { return false }
        } else {
            guard digit >= 2, upper >= 2, lower >= 2 else { return false }
            // Names and paths: separated words ("SN_id_Gost_2001_cc", "Sources/Crypto/Ed25519").
            var separators = 0
            for k in s..<e where buf[k] == UInt8(ascii: "_") || buf[k] == UInt8(ascii: "-") || buf[k] == UInt8(ascii: "/") {
                separators += 1
            }
            if separators >= 2 && separators * 12 >= length { return false }
            // Random text switches between character classes often and has few dictionary-like runs;
            // names ("pbeWithMD2AndRC2", "testDateSince1970") do not.
            if wordiness(buf, s, e) >= 0.6 { return false }
            var runs = 1
            var prev = charClass(buf[s])
            for k in (s + 1)..<e {
                let c = charClass(buf[k])
                if c != prev { runs += 1; prev = c }
            }
            guard Double(length) / Double(runs) <= 2.2 else { return false }
            guard entropy(buf, s, e) >= config.entropyThreshold else { return false }
        }
        if isSequence(buf, s, e) || isUUID(buf, s, e) { return false }
        if hasDigestPrefix(buf, s, e) { return false }
        // "repo#<commit>", "pkg@<digest>"; C++ mangled names ("_ZN…").
        if s > lineStart, buf[s - 1] == UInt8(ascii: "#") || buf[s - 1] == UInt8(ascii: "@") { return false }
        if e - s > 2, buf[s] == UInt8(ascii: "_"), buf[s + 1] == UInt8(ascii: "Z") { return false }
        if s >= lineStart + 7, has(buf, s - 7, e, ScanEngine.base64Comma) { return false }
        if s >= lineStart + 3, buf[s - 1] == UInt8(ascii: ":"), buf[s - 2] == UInt8(ascii: "1"), buf[s - 3] | 0x20 == UInt8(ascii: "h") { return false } // go.sum "h1:"
        if lineMentionsDigest(buf) { return false }
        return true
    }

    private func charClass(_ c: UInt8) -> Int {
        if ascDigit(c) { return 0 }
        if ascLower(c) { return 1 }
        if ascUpper(c) { return 2 }
        return 3
    }

    /// Mostly consecutive bytes (ascending or descending), like "abcdefgh…" or "0123456789".
    private func isSequence(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        var steps = 0
        for k in (s + 1)..<e {
            let d = Int(buf[k]) - Int(buf[k - 1])
            if d == 1 || d == -1 || d == 0 { steps += 1 }
        }
        return steps * 2 >= (e - s - 1)
    }

    private func isUUID(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        guard e - s == 36 else { return false }
        for k in 0..<36 {
            let c = buf[s + k]
            if k == 8 || k == 13 || k == 18 || k == 23 {
                if c != UInt8(ascii: "-") { return false }
            } else if !ascHex(c) {
                return false
            }
        }
        return true
    }

    /// SRI ("sha512-…") and similar "sha256:" / "sha1-" prefixes inside or just before the token.
    private func hasDigestPrefix(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        guard hasLower(buf, s, e, ScanEngine.kwSha) else { return false }
        var k = s + 3
        while k < e, ascDigit(buf[k]) { k += 1 }
        return k > s + 3 && k < e && buf[k] == UInt8(ascii: "-")
    }

    private mutating func lineMentionsDigest(_ buf: UnsafeBufferPointer<UInt8>) -> Bool {
        if let known = lineMentionsDigestCache { return known }
        var found = false
        for w in ScanEngine.digestWords where containsLower(buf, lineStart, lineEnd, w) {
            found = true
            break
        }
        lineMentionsDigestCache = found
        return found
    }

    // MARK: byte helpers

    private func has(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ le: Int, _ lit: [UInt8]) -> Bool {
        guard i >= 0, i + lit.count <= le else { return false }
        for k in 0..<lit.count where buf[i + k] != lit[k] { return false }
        return true
    }

    /// Case-insensitive: `lit` is lower case.
    private func hasLower(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ le: Int, _ lit: [UInt8]) -> Bool {
        guard i >= 0, i + lit.count <= le else { return false }
        for k in 0..<lit.count {
            let c = buf[i + k]
            let l = ascUpper(c) ? c | 0x20 : c
            if l != lit[k] { return false }
        }
        return true
    }

    private func contains(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int, _ lit: [UInt8]) -> Bool {
        guard let first = lit.first, e - s >= lit.count else { return false }
        var i = s
        let last = e - lit.count
        while i <= last {
            if buf[i] == first, has(buf, i, e, lit) { return true }
            i += 1
        }
        return false
    }

    /// Case-insensitive search: `lit` is lower case.
    private func containsLower(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int, _ lit: [UInt8]) -> Bool {
        guard let first = lit.first, e - s >= lit.count else { return false }
        var i = s
        let last = e - lit.count
        while i <= last {
            if buf[i] | 0x20 == first, hasLower(buf, i, e, lit) { return true }
            i += 1
        }
        return false
    }

    private func run(_ buf: UnsafeBufferPointer<UInt8>, _ i: Int, _ le: Int, _ pred: (UInt8) -> Bool) -> Int {
        var j = i
        while j < le, pred(buf[j]) { j += 1 }
        return j
    }

    private func entropy(_ buf: UnsafeBufferPointer<UInt8>, _ s: Int, _ e: Int) -> Double {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 256) { counts in
            counts.initialize(repeating: 0)
            for k in s..<e { counts[Int(buf[k])] += 1 }
            let n = Double(e - s)
            var h = 0.0
            for c in counts where c > 0 {
                let p = Double(c) / n
                h -= p * log2(p)
            }
            return h
        }
    }

    // MARK: literals

    static let allowMarker = Array(SecretScanner.inlineAllowMarker.utf8)
    static let aiza = Array("AIza".utf8)
    static let githubPAT = Array("github_pat_".utf8)
    static let glpat = Array("glpat-".utf8)
    static let slackHooks = Array("hooks.slack.com/".utf8)
    static let slackKinds = [Array("services/".utf8), Array("workflows/".utf8), Array("triggers/".utf8)]
    static let https = Array("https://".utf8)
    static let http = Array("http://".utf8)
    static let stripeLive = Array("_live_".utf8)
    static let eyJ = Array("eyJ".utf8)
    static let npm = Array("npm_".utf8)
    static let pypi = Array(("pypi-" + "AgEIcHlwaS5vcmc").utf8)
    static let begin = Array(("-----" + "BEGIN ").utf8)
    static let endMarker = Array(("-----" + "END").utf8)
    static let dashes = Array("-----".utf8)
    static let privateLabels: [[UInt8]] = ["", "RSA ", "EC ", "OPENSSH ", "DSA ", "PGP ", "ENCRYPTED "].flatMap { kind in
        [Array((kind + "PRIVATE KEY").utf8), Array((kind + "PRIVATE KEY BLOCK").utf8)]
    }
    static let kwAws = Array("aws".utf8)
    static let kwSecret = Array("secret".utf8)
    static let kwAccess = Array("access".utf8)
    static let kwKey = Array("key".utf8)
    static let kwApiKey = Array("api_key".utf8)
    static let kwApiKey2 = Array("api-key".utf8)
    static let kwApikey = Array("apikey".utf8)
    static let kwPassword = Array("password".utf8)
    static let kwPasswd = Array("passwd".utf8)
    static let kwToken = Array("token".utf8)
    static let kwSha = Array("sha".utf8)
    static let scheme = Array("://".utf8)
    static let base64Comma = Array("base64,".utf8)
    static let placeholders: [[UInt8]] = [
        "changeme", "change_me", "change-me", "placeholder", "redacted", "xxxxxx", "******", "your_", "your-",
        "replace_me", "replace-me", "dummy", "notasecret", "not-a-secret", "not_a_secret",
    ].map { Array($0.utf8) }
    static let digestWords: [[UInt8]] = [
        "sha", "digest", "checksum", "integrity", "commit", "rev", "ref", "hash", "md5", "blake", "fingerprint",
        "version", "git", "tag", "head", "tree", "parent", "oid", "uuid", "guid", "identifier", "fixed",
        "introduced", "gpg", "pgp", "keyid", "key-id", "key_id",
    ].map { Array($0.utf8) }
}

// MARK: - Character classes

@inline(__always) private func ascDigit(_ c: UInt8) -> Bool { c &- UInt8(ascii: "0") < 10 }
@inline(__always) private func ascUpper(_ c: UInt8) -> Bool { c &- UInt8(ascii: "A") < 26 }
@inline(__always) private func ascLower(_ c: UInt8) -> Bool { c &- UInt8(ascii: "a") < 26 }
@inline(__always) private func ascAlnum(_ c: UInt8) -> Bool { ascDigit(c) || ascUpper(c) || ascLower(c) }
@inline(__always) private func ascWord(_ c: UInt8) -> Bool { ascAlnum(c) || c == UInt8(ascii: "_") }
@inline(__always) private func ascURLSafe(_ c: UInt8) -> Bool { ascWord(c) || c == UInt8(ascii: "-") }
@inline(__always) private func ascBase32(_ c: UInt8) -> Bool { ascUpper(c) || (c &- UInt8(ascii: "2") < 6) }
@inline(__always) private func ascHex(_ c: UInt8) -> Bool {
    ascDigit(c) || (c | 0x20) &- UInt8(ascii: "a") < 6
}
/// Base64 and base64url alphabets (padding handled separately).
@inline(__always) private func ascB64(_ c: UInt8) -> Bool {
    ascURLSafe(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: "/")
}

// MARK: - Globs

enum ScanGlob {
    static func normalise(_ path: String) -> String {
        var p = path
        while p.hasPrefix("./") { p.removeFirst(2) }
        while p.hasPrefix("/") { p.removeFirst() }
        return p
    }

    /// See `SecretAllowlist` for the syntax. A path ending in `/` names a directory.
    static func matches(glob rawGlob: String, path rawPath: String) -> Bool {
        var glob = rawGlob
        var anchored = false
        if glob.hasPrefix("/") { anchored = true; glob.removeFirst() }
        while glob.hasPrefix("./") { anchored = true; glob.removeFirst(2) }
        var directoryOnly = false
        while glob.hasSuffix("/") { directoryOnly = true; glob.removeLast() }
        if glob.isEmpty { return false }
        if glob.contains("/") { anchored = true }
        let g = Array(glob.utf8)
        let isDirectory = rawPath.hasSuffix("/")
        let parts = rawPath.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
        if parts.isEmpty { return false }
        // Components (unanchored) or leading paths (anchored) that may match; the last one only when the
        // glob may name a file or the path is a directory. Matching a directory covers all beneath it.
        let last = parts.count - 1
        if !anchored {
            for (i, part) in parts.enumerated() where i < last || !directoryOnly || isDirectory {
                if match(g, part) { return true }
            }
            return false
        }
        var prefix: [UInt8] = []
        for (i, part) in parts.enumerated() {
            if i > 0 { prefix.append(UInt8(ascii: "/")) }
            prefix += part
            if i == last && directoryOnly && !isDirectory { break }
            if match(g, prefix) { return true }
        }
        return false
    }

    /// `*` and `?` stay within one path segment, `**` crosses segments, `**/` also matches no directory.
    static func match(_ g: [UInt8], _ p: [UInt8]) -> Bool {
        // memo[gi * (p.count + 1) + pi]: 0 unknown, 1 true, 2 false
        var memo = [UInt8](repeating: 0, count: (g.count + 1) * (p.count + 1))
        func m(_ gi: Int, _ pi: Int) -> Bool {
            let key = gi * (p.count + 1) + pi
            if memo[key] != 0 { return memo[key] == 1 }
            var result = false
            if gi == g.count {
                result = pi == p.count
            } else if g[gi] == UInt8(ascii: "*") {
                if gi + 1 < g.count && g[gi + 1] == UInt8(ascii: "*") {
                    var next = gi + 2
                    if next < g.count && g[next] == UInt8(ascii: "/") {
                        next += 1
                        // "**/" matches zero directories, or any prefix ending with "/".
                        if m(next, pi) { result = true }
                        else {
                            var k = pi
                            while k < p.count {
                                if p[k] == UInt8(ascii: "/") && m(next, k + 1) { result = true; break }
                                k += 1
                            }
                        }
                    } else {
                        var k = pi
                        while true {
                            if m(next, k) { result = true; break }
                            if k == p.count { break }
                            k += 1
                        }
                    }
                } else {
                    var k = pi
                    while true {
                        if m(gi + 1, k) { result = true; break }
                        if k == p.count || p[k] == UInt8(ascii: "/") { break }
                        k += 1
                    }
                }
            } else if pi < p.count {
                if g[gi] == UInt8(ascii: "?") {
                    result = p[pi] != UInt8(ascii: "/") && m(gi + 1, pi + 1)
                } else {
                    result = g[gi] == p[pi] && m(gi + 1, pi + 1)
                }
            }
            memo[key] = result ? 1 : 2
            return result
        }
        return m(0, 0)
    }
}

// MARK: - SHA-256 (fingerprints)

enum ScanSHA256 {
    static func hex(_ message: [UInt8]) -> String { SHA256.hash(data: message).hexString }
}
