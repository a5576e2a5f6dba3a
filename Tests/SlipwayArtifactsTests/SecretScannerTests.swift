import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayArtifacts

// Test secrets are assembled at run time from pieces and a seeded generator so that no string in this
// file looks like a live credential to push-protection scanners. The fixture tree only holds values that
// are obviously fake (AWS's documentation examples, a "key" whose base64 says it is not one).

/// Deterministic generator.
private typealias SecretScanRNG = SplitMix64

private enum SecretScanAlphabet {
    static let upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    static let lower = "abcdefghijklmnopqrstuvwxyz"
    static let digits = "0123456789"
    static let alnum = upper + lower + digits
    static let base32 = upper + "234567"
    static let word = alnum + "_"
    static let urlSafe = alnum + "_-"
    static let base64 = alnum + "+/"
}

private func secretScanRandom(_ alphabet: String, _ count: Int, _ rng: inout SecretScanRNG) -> String {
    let chars = Array(alphabet)
    return String((0..<count).map { _ in chars[Int(rng.next() % UInt64(chars.count))] })
}

private func scanText(_ text: String, file: String = "src/app.txt", config: SecretScanConfig = SecretScanConfig()) -> [SecretFinding] {
    SecretScanner.scan(data: Data(text.utf8), file: file, config: config)
}

private func rulesFound(_ text: String, config: SecretScanConfig = SecretScanConfig()) -> [String] {
    scanText(text, config: config).map(\.rule)
}

/// A fresh temporary directory, removed by the caller.
private func makeSecretScanTempDir() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("secret-scan-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

private func writeSecretScanFile(_ text: String, to url: URL) throws {
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try Data(text.utf8).write(to: url)
}

private let secretScanFixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/secret-scan")

/// The repository root: this file is Tests/SlipwayArtifactsTests/SecretScannerTests.swift (symbolic links
/// resolved, so a scratch package linking to it still finds the real tree).
private let secretScanRepoRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Test values, one per rule, assembled from pieces.
private struct PlantedSecrets {
    var rng = SecretScanRNG(seed: 0x5EC2_E7)
    lazy var awsKeyID = "AKIA" + secretScanRandom(SecretScanAlphabet.base32, 16, &rng)
    lazy var awsSecret = secretScanRandom(SecretScanAlphabet.base64, 40, &rng)
    lazy var githubClassic = "gh" + "p_" + secretScanRandom(SecretScanAlphabet.alnum, 36, &rng)
    lazy var githubFine = "github" + "_pat_" + secretScanRandom(SecretScanAlphabet.word, 82, &rng)
    lazy var gitlab = "gl" + "pat-" + secretScanRandom(SecretScanAlphabet.alnum, 20, &rng)
    lazy var slackToken = "xo" + "xb-" + secretScanRandom(SecretScanAlphabet.digits, 12, &rng) + "-" + secretScanRandom(SecretScanAlphabet.alnum, 24, &rng)
    lazy var slackWebhook = "https://hooks." + "slack.com/services/T" + secretScanRandom(SecretScanAlphabet.upper + SecretScanAlphabet.digits, 8, &rng)
        + "/B" + secretScanRandom(SecretScanAlphabet.upper + SecretScanAlphabet.digits, 8, &rng) + "/" + secretScanRandom(SecretScanAlphabet.alnum, 24, &rng)
    lazy var stripe = "sk" + "_live_" + secretScanRandom(SecretScanAlphabet.alnum, 24, &rng)
    lazy var stripeRestricted = "rk" + "_live_" + secretScanRandom(SecretScanAlphabet.alnum, 30, &rng)
    lazy var google = "AI" + "za" + secretScanRandom(SecretScanAlphabet.urlSafe, 35, &rng)
    lazy var npm = "np" + "m_" + secretScanRandom(SecretScanAlphabet.alnum, 36, &rng)
    lazy var pypi = "py" + "pi-AgEIcHlwaS5vcmc" + secretScanRandom(SecretScanAlphabet.urlSafe, 60, &rng)
    lazy var jwt: String = {
        func b64url(_ s: String) -> String {
            Data(s.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        return b64url(#"{"alg":"HS256","typ":"JWT"}"#) + "." + b64url(#"{"sub":"test","n":\#(rng.next() % 1000)}"#)
            + "." + secretScanRandom(SecretScanAlphabet.urlSafe, 43, &rng)
    }()
    lazy var privateKeyBody: String = {
        let bytes = (0..<180).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let b64 = Data(bytes).base64EncodedString()
        var lines: [String] = []
        var rest = Substring(b64)
        while !rest.isEmpty { lines.append(String(rest.prefix(64))); rest = rest.dropFirst(64) }
        return lines.joined(separator: "\n")
    }()
    lazy var password = "Zq7!" + secretScanRandom(SecretScanAlphabet.alnum, 8, &rng) + "#4"

    func pem(_ kind: String) -> String {
        "-----" + "BEGIN \(kind)PRIVATE KEY-----"
    }
}

// MARK: - Known formats: positive

@Suite struct SecretScannerRuleTests {
    @Test func awsAccessKeyID() {
        var p = PlantedSecrets()
        let id = p.awsKeyID
        #expect(rulesFound("key = \(id)") == ["aws-access-key-id"])
        for prefix in ["ASIA", "ABIA", "ACCA", "A3T" + "Q"] {
            let v = prefix + String(id.dropFirst(4))
            #expect(rulesFound("id: \"\(v)\"") == ["aws-access-key-id"], "\(prefix)")
        }
        // AWS's documented example is reported too (it matches the format).
        #expect(rulesFound("AKIAIOSFODNN7EXAMPLE") == ["aws-access-key-id"])
    }

    @Test func awsAccessKeyIDNegative() {
        var p = PlantedSecrets()
        let id = p.awsKeyID
        #expect(rulesFound(String(id.dropLast())).isEmpty)                  // 19 characters
        #expect(!rulesFound(id + "Q").contains("aws-access-key-id"))         // 21: not a whole token
        #expect(!rulesFound("X" + id).contains("aws-access-key-id"))         // glued to a word
        #expect(rulesFound(id.lowercased()).isEmpty)
        #expect(rulesFound("AKIA" + "0189018901890189").isEmpty)             // 0, 1, 8, 9 are not base32
        #expect(rulesFound("AKIB" + String(id.dropFirst(4))).isEmpty)
    }

    @Test func awsSecretAccessKey() {
        var p = PlantedSecrets()
        let s = p.awsSecret
        for line in ["aws_secret_access_key = \(s)", "AWS_SECRET_ACCESS_KEY=\"\(s)\"", "aws-secret-key: '\(s)'",
                     "\"awsSecretAccessKey\": \"\(s)\"", "aws.secret.access.key := \(s)"] {
            let f = scanText(line)
            #expect(f.map(\.rule) == ["aws-secret-access-key"], "\(line)")
        }
    }

    @Test func awsSecretAccessKeyNegative() {
        var p = PlantedSecrets()
        let s = p.awsSecret
        // Wrong length: not this rule (may still be a generic secret).
        #expect(!rulesFound("aws_secret_access_key = \(s.dropLast())").contains("aws-secret-access-key"))
        #expect(!rulesFound("aws_secret_access_key = \(s)Q").contains("aws-secret-access-key"))
        // Without the assignment context it is at most a high-entropy string.
        #expect(!rulesFound("value = \(s)").contains("aws-secret-access-key"))
        #expect(rulesFound("aws_secret_access_key = ${{ secrets.AWS_SECRET }}").isEmpty)
        // A longer name is still a generic secret assignment.
        var q = PlantedSecrets()
        #expect(rulesFound("aws_secret_access_key_old = \"\(q.password)\"") == ["generic-secret"])
    }

    @Test func githubTokens() {
        var p = PlantedSecrets()
        let classic = p.githubClassic
        let fine = p.githubFine
        #expect(rulesFound("GITHUB_TOKEN=\(classic)") == ["github-token"])
        for kind in ["o", "u", "s", "r"] {
            let v = "gh" + kind + String(classic.dropFirst(3))
            #expect(rulesFound("token: \(v)") == ["github-token"], "\(kind)")
        }
        #expect(rulesFound("auth \(fine) end") == ["github-token"])
    }

    @Test func githubTokensNegative() {
        var p = PlantedSecrets()
        let classic = p.githubClassic
        let fine = p.githubFine
        #expect(!rulesFound(String(classic.dropLast())).contains("github-token"))
        #expect(!rulesFound(classic + "x").contains("github-token"))
        #expect(!rulesFound("gh" + "x" + String(classic.dropFirst(3))).contains("github-token"))
        #expect(!rulesFound(String(fine.dropLast())).contains("github-token"))
        #expect(rulesFound("see ghp_ for the prefix").isEmpty)
    }

    @Test func gitlabToken() {
        var p = PlantedSecrets()
        let t = p.gitlab
        #expect(rulesFound("PRIVATE-TOKEN: \(t)") == ["gitlab-token"])
        #expect(!rulesFound(String(t.dropLast())).contains("gitlab-token"))
        #expect(rulesFound("gl" + "pat-xxxx").isEmpty)
    }

    @Test func slackToken() {
        var p = PlantedSecrets()
        let t = p.slackToken
        #expect(rulesFound("SLACK=\(t)") == ["slack-token"])
        for kind in ["a", "p", "r", "s"] {
            #expect(rulesFound("xo" + "x" + kind + String(t.dropFirst(4))) == ["slack-token"], "\(kind)")
        }
        #expect(rulesFound("xo" + "xb-your-token-here").isEmpty)             // no digits: a placeholder
        #expect(!rulesFound("xo" + "xz-" + String(t.dropFirst(5))).contains("slack-token")) // unknown kind
        #expect(rulesFound("xo" + "xb-12345").isEmpty)                         // too short
    }

    @Test func slackWebhookURL() {
        var p = PlantedSecrets()
        let url = p.slackWebhook
        let f = scanText("notify: \(url)")
        #expect(f.map(\.rule) == ["slack-webhook-url"])
        #expect(f.first?.column == 9) // the URL, "https://" included
        #expect(rulesFound("docs: https://hooks." + "slack.com/services/").isEmpty)
        #expect(rulesFound("https://hooks." + "slack.com/other/T0000/B0000/abcdefghijklmnopqrstuvwx").isEmpty)
    }

    @Test func stripeKeys() {
        var p = PlantedSecrets()
        let sk = p.stripe
        let rk = p.stripeRestricted
        #expect(rulesFound("STRIPE_KEY=\(sk)") == ["stripe-secret-key"])
        #expect(rulesFound("\"\(rk)\"") == ["stripe-secret-key"])
        #expect(!rulesFound(String(sk.dropLast())).contains("stripe-secret-key"))
        #expect(!rulesFound("sk" + "_test_" + String(sk.dropFirst(8))).contains("stripe-secret-key"))
    }

    @Test func googleAPIKey() {
        var p = PlantedSecrets()
        let k = p.google
        #expect(rulesFound("maps_key: \(k)") == ["google-api-key"])
        #expect(!rulesFound(String(k.dropLast())).contains("google-api-key"))
        #expect(!rulesFound(k + "Z").contains("google-api-key"))
    }

    @Test func privateKeyBlocks() {
        var p = PlantedSecrets()
        let body = p.privateKeyBody
        for kind in ["", "RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED "] {
            let text = "prefix\n" + p.pem(kind) + "\n" + body + "\n-----" + "END \(kind)PRIVATE KEY-----\nsuffix\n"
            let f = scanText(text)
            #expect(f.map(\.rule) == ["private-key"], "\(kind)")
            #expect(f.first?.line == 2)
            #expect(f.first?.column == 1)
        }
        // PGP armour, with a header line.
        let pgp = "-----" + "BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: Test 1\n\n" + body + "\n-----" + "END PGP PRIVATE KEY BLOCK-----\n"
        #expect(rulesFound(pgp) == ["private-key"])
        // Inside a JSON string with escaped newlines.
        let json = #"{"key": ""# + p.pem("") + "\\n" + body.replacingOccurrences(of: "\n", with: "\\n") + "\\n-----" + #"END PRIVATE KEY-----\n"}"#
        #expect(rulesFound(json) == ["private-key"])
    }

    @Test func privateKeyNegative() {
        var p = PlantedSecrets()
        let body = p.privateKeyBody
        // A header quoted in prose, with no key material.
        #expect(rulesFound("Files start with `\(p.pem("RSA "))`.\nThat is all.\n").isEmpty)
        // Certificates and public keys are not secrets, and their bodies are not high-entropy findings.
        let cert = "-----" + "BEGIN CERTIFICATE-----\n" + body + "\n-----" + "END CERTIFICATE-----\n"
        #expect(rulesFound(cert).isEmpty)
        let pub = "-----" + "BEGIN PUBLIC KEY-----\n" + body + "\n-----" + "END PUBLIC KEY-----\n"
        #expect(rulesFound(pub).isEmpty)
        // Too little material.
        #expect(rulesFound(p.pem("") + "\nabc\n-----" + "END PRIVATE KEY-----\n").isEmpty)
    }

    @Test func privateKeyFingerprintCoversTheWholeBlock() {
        var p = PlantedSecrets()
        let a = p.pem("") + "\n" + p.privateKeyBody + "\n-----" + "END PRIVATE KEY-----\n"
        var q = PlantedSecrets()
        q.rng = SecretScanRNG(seed: 99)
        let b = q.pem("") + "\n" + q.privateKeyBody + "\n-----" + "END PRIVATE KEY-----\n"
        let fa = scanText(a), fb = scanText(b)
        #expect(fa.count == 1 && fb.count == 1)
        #expect(fa.first?.fingerprint != fb.first?.fingerprint)
    }

    @Test func jwt() {
        var p = PlantedSecrets()
        let t = p.jwt
        #expect(rulesFound("Authorization: Bearer \(t)") == ["jwt"])
        #expect(rulesFound("{\"id_token\":\"\(t)\"}") == ["jwt"])
        let parts = t.split(separator: ".")
        #expect(!rulesFound(String(parts[0])).contains("jwt"))
        #expect(!rulesFound(parts[0] + "." + parts[0]).contains("jwt"))
        #expect(rulesFound("eyJ" + "abc.eyJ" + "def.ghi").isEmpty)
    }

    @Test func npmToken() {
        var p = PlantedSecrets()
        let t = p.npm
        #expect(rulesFound("//registry.npmjs.org/:_authToken=\(t)") == ["npm-token"])
        #expect(!rulesFound(String(t.dropLast())).contains("npm-token"))
        #expect(!rulesFound(t + "a").contains("npm-token"))
    }

    @Test func pypiToken() {
        var p = PlantedSecrets()
        let t = p.pypi
        #expect(rulesFound("password = \(t)") == ["pypi-token"])
        #expect(!rulesFound(String(t.prefix(20 + 49))).contains("pypi-token"))
    }

    @Test func genericSecretAssignments() {
        var p = PlantedSecrets()
        let pw = p.password
        for line in ["password = \"\(pw)\"", "DB_PASSWORD=\(pw)", "\"api_key\": \"\(pw)\"", "secret: '\(pw)'",
                     "passwd := \(pw)", "apiKey => \"\(pw)\"", "client_secret = \(pw);", "X-API-KEY: \(pw)",
                     "auth_token=\"\(pw)\""] {
            #expect(rulesFound(line) == ["generic-secret"], "\(line)")
        }
        // Long values with three character classes, even with modest entropy.
        #expect(rulesFound("password = \"aaaabbbbccccddddAAAA1111\"") == ["generic-secret"])
        // Unquoted, mixing digits like a generated password.
        #expect(rulesFound("DB_PASSWORD=Passw0rd123") == ["generic-secret"])
    }

    @Test func genericSecretNegative() {
        let lines = [
            "password = changeme1!", "password: String", "let token = try makeToken()", "token = getToken(for: user)",
            "secret: ${{ secrets.DEPLOY_TOKEN }}", "api_key = os.environ[\"API_KEY\"]", "password = \"hunter\"",
            "case secretScan = \"slipway/secret-scan\"", "let token = FTS5Tokenizer", "secretSize = Curve25519.KeyAgreement.keySizeBytes",
            "tokenizerPointer: OpaquePointer?,", "tokenize=unicode61", "*out_shared_secret_len = SHA256_DIGEST_LENGTH;",
            "if token == expectedToken1 {", "token != previousToken2", "password = \"<your-password>\"",
            "secret = \"********\"", "token: xxxxxxxxxxxx", "password_file = /etc/app/password.txt", "token: https://example.com/t",
            "api_key = \"%s\"", "secrets set NAME VALUE", "secret = \"replace_me_2024\"", "self.secret = secret",
            "password: \"{{ .Values.password }}\"", "token = $(cat /run/token)", "secret: !vault |",
        ]
        for line in lines {
            #expect(rulesFound(line).isEmpty, "\(line)")
        }
    }

    @Test func highEntropyStrings() {
        var rng = SecretScanRNG(seed: 42)
        // A random base64 token of 40 characters is reported most of the time; the filters that keep
        // identifiers out cost some recall, so require a high rate rather than every one.
        var found = 0
        let total = 400
        for _ in 0..<total {
            let token = secretScanRandom(SecretScanAlphabet.base64, 40, &rng)
            if rulesFound("value \(token)\n").contains("high-entropy-string") { found += 1 }
        }
        #expect(found * 100 >= total * 80, "found \(found)/\(total)")
        // Hex: 40 random hex digits.
        var hexFound = 0
        for _ in 0..<100 {
            let token = secretScanRandom("0123456789abcdef", 40, &rng)
            if rulesFound("seed \(token)\n") == ["high-entropy-string"] { hexFound += 1 }
        }
        #expect(hexFound >= 95, "hex \(hexFound)/100")
    }

    @Test func highEntropyNegative() {
        let lines = [
            "id 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "\"integrity\": \"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==\"",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0123456789012345678901234567890123456789",
            "testEncodingDateMillisecondsSince1970",
            "parseSourceKittenIssue289UsingCompose",
            "SN_id_GostR3410_2001_ParamSet_cc",
            "Sources/Crypto/Signatures/Ed25519/Ed25519Keys.swift",
            "/usr/lib/swift/linux/x86_64/libFoundation.so",
            "x86_64-unknown-linux-gnu",
            "img src=\"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\"",
            "github.com/foo/bar v1.2.3 h1:Gx2ZvDq1Q8k0J3b5T6m9N2p4R7s1U8w0Y3z6A9c2E5g=",
            "pbeWithSHAAnd128BitRC4",
            "CCryptoBoringSSLShims_EC_hash_to_curve_p384_xmd_sha384_sswu",
        ]
        for line in lines {
            #expect(rulesFound(line).isEmpty, "\(line)")
        }
    }

    @Test func highEntropyIsConfigurable() {
        var rng = SecretScanRNG(seed: 7)
        let token = secretScanRandom(SecretScanAlphabet.base64, 24, &rng)
        let strict = SecretScanConfig(entropyThreshold: 6.5)
        #expect(rulesFound("v \(token)", config: strict).isEmpty)
        var lenient = SecretScanConfig(entropyThreshold: 0.1)
        lenient.minimumEntropyLength = 64
        #expect(rulesFound("v \(token)", config: lenient).isEmpty)
        let hexToken = secretScanRandom("0123456789abcdef", 24, &rng)
        #expect(rulesFound("v \(hexToken)", config: SecretScanConfig(hexEntropyThreshold: 4.5)).isEmpty)
        #expect(rulesFound("v \(hexToken)", config: SecretScanConfig(hexEntropyThreshold: 2.0)) == ["high-entropy-string"])
    }

    @Test func lockfilesSkipEntropyButNotKnownFormats() {
        var rng = SecretScanRNG(seed: 11)
        var p = PlantedSecrets()
        let text = "abc \(secretScanRandom("0123456789abcdef", 64, &rng)) \(secretScanRandom(SecretScanAlphabet.base64, 40, &rng))\n\(p.githubClassic)\n"
        for name in ["go.sum", "package-lock.json", "Cargo.lock", "Package.resolved", "yarn.lock", "App.xcodeproj/project.pbxproj"] {
            #expect(SecretScanner.scan(data: Data(text.utf8), file: "x/\(name)", config: SecretScanConfig()).map(\.rule) == ["github-token"], "\(name)")
        }
    }

    @Test func knownFormatIsReportedOnce() {
        var p = PlantedSecrets()
        // A known token inside a password assignment is reported by its own rule only.
        #expect(rulesFound("password = \"\(p.githubClassic)\"") == ["github-token"])
        #expect(rulesFound("api_key: \(p.google)") == ["google-api-key"])
        // Several secrets on one line are all reported, in column order.
        let line = "\(p.awsKeyID) \(p.npm) \(p.stripe)"
        #expect(rulesFound(line) == ["aws-access-key-id", "npm-token", "stripe-secret-key"])
    }

    @Test func inlineAllowMarker() {
        var p = PlantedSecrets()
        #expect(rulesFound("key = \(p.awsKeyID)  # slipway:allow-secret").isEmpty)
        #expect(rulesFound("key = \(p.awsKeyID)\n// slipway:allow-secret\n").count == 1)
    }

    @Test func everyRuleIDIsKnownAndUnique() {
        #expect(Set(SecretScanner.ruleIDs).count == SecretScanner.ruleIDs.count)
        #expect(SecretScanner.ruleIDs.count == 14)
    }
}

// MARK: - Positions, masking, fingerprints

@Suite struct SecretFindingTests {
    @Test func lineAndColumn() {
        var p = PlantedSecrets()
        let id = p.awsKeyID
        let text = "first line\n\n\tindented \(id)\nlast"
        let f = scanText(text, file: "src/config.py")
        #expect(f.count == 1)
        #expect(f.first?.line == 3)
        #expect(f.first?.column == 11)
        #expect(f.first?.description == "src/config.py:3:11: aws-access-key-id \(id.prefix(4))…***")
    }

    /// Columns count Characters (grapheme clusters), not bytes or UTF-16 units.
    @Test func columnCountsCharactersAfterMultibyteText() {
        var p = PlantedSecrets()
        let id = p.awsKeyID
        // "é" (2 bytes), "日本" (3 bytes each), "🚀" (4 bytes, 2 UTF-16 units), "👩‍👩‍👧" (one Character of
        // 18 bytes), "e\u{301}" (two scalars, one Character): 9 Characters before the key.
        let prefix = "é日本🚀 👩‍👩‍👧e\u{301}: "
        #expect(prefix.count == 9)
        let f = scanText("line one\n" + prefix + id + "\n")
        #expect(f.first?.line == 2)
        #expect(f.first?.column == 10)
        // Two findings on a line after multibyte text: columns stay right for both.
        let g = scanText("ü \(id) ß \(p.npm)")
        #expect(g.map(\.column) == [3, 26])
    }

    @Test func byteOrderMarkAndCRLF() {
        var p = PlantedSecrets()
        let id = p.awsKeyID
        let f = scanText("\u{FEFF}\(id)\r\nx\r\n  \(id)\r\n")
        #expect(f.map(\.line) == [1, 3])
        #expect(f.map(\.column) == [1, 3])
    }

    @Test func lastLineWithoutNewlineAndEmptyInput() {
        var p = PlantedSecrets()
        #expect(scanText("a\nb \(p.npm)").first?.line == 2)
        #expect(scanText("").isEmpty)
        #expect(scanText("\n\n\n").isEmpty)
    }

    @Test func maskingNeverShowsMoreThanFourCharacters() {
        var p = PlantedSecrets()
        let values = [p.awsKeyID, p.awsSecret, p.githubClassic, p.githubFine, p.gitlab, p.slackToken, p.slackWebhook,
                      p.stripe, p.google, p.npm, p.pypi, p.jwt, p.password]
        let text = values.enumerated().map { i, v in
            i == 1 ? "aws_secret_access_key = \(v)" : i == values.count - 1 ? "password = \"\(v)\"" : "x \(v)"
        }.joined(separator: "\n") + "\n" + p.pem("") + "\n" + p.privateKeyBody + "\n-----" + "END PRIVATE KEY-----\n"
        let findings = scanText(text)
        #expect(findings.count == values.count + 1)
        let encoded = String(decoding: (try? JSONEncoder().encode(findings)) ?? Data(), as: UTF8.self)
        for (f, v) in zip(findings, values) {
            #expect(f.masked == String(v.prefix(4)) + "…***")
            #expect(!f.description.contains(v))
            #expect(!f.fingerprint.contains(v))
            // No 5-character window of the value appears in any field (beyond the rule id and file name,
            // which the value may share words with, like "slack").
            let chars = Array(v)
            for start in 0...(chars.count - 5) {
                let window = String(chars[start..<(start + 5)])
                if f.rule.contains(window) || f.file.contains(window) { continue }
                #expect(!f.masked.contains(window) && !f.description.contains(window) && !encoded.contains(window),
                        "\(f.rule) leaks \(window)")
            }
        }
        #expect(!encoded.contains(p.privateKeyBody.prefix(12)))
    }

    @Test func maskShortValues() {
        #expect(SecretFinding.mask("abcdefghijk") == "***")        // 11 characters
        #expect(SecretFinding.mask("abcdefghijkl") == "abcd…***")  // 12 characters
        #expect(SecretFinding.mask("") == "***")
        #expect(SecretFinding.mask("日本語日本語日本語日本語") == "日本語日…***")
    }

    @Test func fingerprintIsStableAndDocumented() {
        // Known SHA-256 vectors.
        #expect(ScanSHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(ScanSHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(ScanSHA256.hex(Array(String(repeating: "a", count: 1000).utf8)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        #expect(SecretFinding.fingerprint(rule: "jwt", file: "a/b.txt", value: "abc") == "jwt:a/b.txt:ba7816bf8f01cfea")

        var p = PlantedSecrets()
        let id = p.awsKeyID
        let a = scanText("x \(id)", file: "a.txt")
        let b = scanText("\n\n   y = \(id)", file: "a.txt")
        let c = scanText("x \(id)", file: "b.txt")
        #expect(a.first?.fingerprint == b.first?.fingerprint) // moves within a file keep the fingerprint
        #expect(a.first?.fingerprint != c.first?.fingerprint)
        #expect(a.first?.fingerprint == SecretFinding.fingerprint(rule: "aws-access-key-id", file: "a.txt", value: id))
        #expect(a.first.map { $0.fingerprint.split(separator: ":").last?.count } == 16)
    }

    @Test func findingRoundTripsThroughJSON() throws {
        var p = PlantedSecrets()
        let f = try #require(scanText("x \(p.npm)").first)
        let back = try JSONDecoder().decode(SecretFinding.self, from: JSONEncoder().encode(f))
        #expect(back == f)
        #expect("\(f)" == f.description)
    }
}

// MARK: - Allowlist

@Suite struct SecretAllowlistTests {
    @Test func parseAllEntryKinds() {
        let text = """
        # comment

        aws-access-key-id:src/a.txt:0123456789abcdef
          path:vendor/**
        rule:jwt
        regex:^AKIA.*EXAMPLE$
        """
        let (list, problems) = SecretAllowlist.parse(text)
        #expect(problems.isEmpty)
        #expect(list.fingerprints == ["aws-access-key-id:src/a.txt:0123456789abcdef"])
        #expect(list.pathGlobs == ["vendor/**"])
        #expect(list.disabledRules == ["jwt"])
        #expect(list.valuePatterns == ["^AKIA.*EXAMPLE$"])
        #expect(!list.isEmpty)
        #expect(SecretAllowlist.empty.isEmpty)
    }

    @Test func parseReportsProblemsWithoutEchoingThem() {
        var p = PlantedSecrets()
        let pasted = p.githubClassic
        let text = "\(pasted)\nrule:no-such-rule\nregex:([unclosed\npath:\nno-such-rule:f:0123456789abcdef\njwt:f:XYZ\n"
        let (list, problems) = SecretAllowlist.parse(text)
        #expect(list.isEmpty)
        #expect(problems.count == 6)
        #expect(problems.first?.hasPrefix("line 1:") == true)
        #expect(problems.allSatisfy { !$0.contains(pasted) && !$0.contains("unclosed") })
    }

    @Test func fingerprintSuppressesOnlyThatValueInThatFile() {
        var p = PlantedSecrets()
        let a = p.awsKeyID, b = p.npm
        let text = "x \(a)\ny \(b)\n"
        let all = scanText(text, file: "cfg/app.env")
        #expect(all.count == 2)
        let (list, problems) = SecretAllowlist.parse(all[0].fingerprint)
        #expect(problems.isEmpty)
        let config = SecretScanConfig(allowlist: list)
        #expect(scanText(text, file: "cfg/app.env", config: config).map(\.rule) == ["npm-token"])
        // Same value in another file is still reported.
        #expect(scanText(text, file: "cfg/other.env", config: config).count == 2)
    }

    @Test func ruleDisablesOneRule() {
        var p = PlantedSecrets()
        let text = "\(p.jwt)\n\(p.npm)\n"
        let (list, _) = SecretAllowlist.parse("rule:jwt")
        #expect(rulesFound(text, config: SecretScanConfig(allowlist: list)) == ["npm-token"])
        // A disabled known-format rule still shields its value from the generic rules.
        #expect(rulesFound("token = \(p.jwt)", config: SecretScanConfig(allowlist: list)).isEmpty)
    }

    @Test func regexIgnoresMatchingValues() {
        var p = PlantedSecrets()
        let text = "AKIAIOSFODNN7EXAMPLE\n\(p.awsKeyID)\n"
        let (list, problems) = SecretAllowlist.parse("regex:EXAMPLE$")
        #expect(problems.isEmpty)
        let f = scanText(text, config: SecretScanConfig(allowlist: list))
        #expect(f.map(\.line) == [2])
    }

    @Test func pathGlobs() {
        let cases: [(String, String, Bool)] = [
            ("vendor/", "vendor/lib.js", true), ("vendor/", "src/vendor/lib.js", true), ("vendor/", "vendor", false),
            ("vendor/", "vendor/", true), ("/vendor/", "src/vendor/lib.js", false), ("src/vendor/", "src/vendor/a/b.js", true),
            ("vendor", "src/vendor/lib.js", true), ("vendor/**", "vendor/a/b/c.js", true),
            ("*.pem", "deep/dir/key.pem", true), ("*.pem", "deep/dir/key.pem.txt", false),
            ("src/*.py", "src/a.py", true), ("src/*.py", "src/sub/a.py", false),
            ("src/**/*.py", "src/a.py", true), ("src/**/*.py", "src/x/y/a.py", true),
            ("**/fixtures/**", "Tests/fixtures/a/b.txt", true), ("/docs/*.md", "docs/a.md", true),
            ("/docs/*.md", "x/docs/a.md", false), ("test?.txt", "test1.txt", true), ("test?.txt", "test10.txt", false),
            ("Tests/Fixtures", "Tests/Fixtures/secret-scan/a.txt", true), ("./config/settings.py", "config/settings.py", true),
        ]
        for (glob, path, expected) in cases {
            let (list, _) = SecretAllowlist.parse("path:\(glob)")
            #expect(list.excludes(path: path) == expected, "\(glob) vs \(path)")
        }
        var p = PlantedSecrets()
        let (list, _) = SecretAllowlist.parse("path:*.env")
        #expect(scanText("\(p.npm)", file: "deploy/prod.env", config: SecretScanConfig(allowlist: list)).isEmpty)
        #expect(scanText("\(p.npm)", file: "deploy/prod.txt", config: SecretScanConfig(allowlist: list)).count == 1)
    }

    @Test func merging() {
        let (a, _) = SecretAllowlist.parse("rule:jwt\npath:a/")
        let (b, _) = SecretAllowlist.parse("rule:npm-token\npath:a/\nregex:x")
        let m = a.merging(b)
        #expect(m.disabledRules == ["jwt", "npm-token"])
        #expect(m.pathGlobs == ["a/"])
        #expect(m.valuePatterns == ["x"])
    }
}

// MARK: - Directory walk

@Suite struct SecretScanWalkTests {
    /// The fixture tree: exactly the planted secrets, nothing from the decoys.
    static let expected: [(file: String, line: Int, column: Int, rule: String)] = [
        ("config/settings.py", 5, 22, "aws-access-key-id"),
        ("config/settings.py", 6, 26, "aws-secret-access-key"),
        ("config/settings.py", 7, 22, "generic-secret"),
        ("data/notes.md", 3, 21, "high-entropy-string"),
        ("data/notes.md", 4, 15, "high-entropy-string"),
        ("data/notes.md", 5, 21, "aws-access-key-id"),
        ("deploy/id_rsa", 1, 1, "private-key"),
        ("vendor/lib.js", 2, 31, "generic-secret"),
        ("web/session.json", 3, 15, "jwt"),
    ]

    @Test func fixtureTreeFindsExactlyThePlantedSecrets() {
        let result = SecretScanner.scan(root: secretScanFixtureRoot.path, config: SecretScanConfig())
        let got = result.findings.map { "\($0.file):\($0.line):\($0.column): \($0.rule)" }
        let want = Self.expected.map { "\($0.file):\($0.line):\($0.column): \($0.rule)" }
        #expect(got == want)
        #expect(result.filesScanned == 8)
        #expect(result.skipped.isEmpty)
        // Masked everywhere: the AWS example key never appears whole.
        for f in result.findings {
            #expect(!f.description.contains("AKIAIOSFODNN7EXAMPLE"))
            #expect(!f.description.contains("wJalrXUtnFEMI"))
        }
    }

    @Test func fixtureTreeWithItsAllowlist() throws {
        let text = try String(contentsOf: secretScanFixtureRoot.appendingPathComponent("docs/allowlist.txt"), encoding: .utf8)
        let (list, problems) = SecretAllowlist.parse(text)
        #expect(problems.isEmpty)
        let result = SecretScanner.scan(root: secretScanFixtureRoot.path, config: SecretScanConfig(allowlist: list))
        let got = result.findings.map { "\($0.file):\($0.line): \($0.rule)" }
        #expect(got == [
            "config/settings.py:5: aws-access-key-id", "config/settings.py:7: generic-secret",
            "data/notes.md:3: high-entropy-string", "data/notes.md:4: high-entropy-string",
            "data/notes.md:5: aws-access-key-id", "deploy/id_rsa:1: private-key",
        ])
        #expect(result.skipped == ["vendor/ (allowlisted)"])
        #expect(result.filesScanned == 7)
    }

    @Test func skipsGitSlipwayNodeModulesBinaryLargeAndLinks() throws {
        var p = PlantedSecrets()
        let dir = try makeSecretScanTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let secret = "token: \(p.npm)\n"
        try writeSecretScanFile(secret, to: dir.appendingPathComponent("app/main.txt"))
        try writeSecretScanFile(secret, to: dir.appendingPathComponent(".git/config"))
        try writeSecretScanFile(secret, to: dir.appendingPathComponent(".slipway/state.txt"))
        try writeSecretScanFile(secret, to: dir.appendingPathComponent("web/node_modules/pkg/index.js"))
        // Binary: a NUL byte within the first 8 KiB, secret after it.
        var binary = Data("head".utf8)
        binary.append(0)
        binary.append(Data(secret.utf8))
        try binary.write(to: dir.appendingPathComponent("app/blob.bin"))
        // NUL only after 8 KiB: text.
        var late = Data(String(repeating: "x", count: 9000).utf8)
        late.append(Data("\n".utf8))
        late.append(Data(secret.utf8))
        late.append(0)
        try late.write(to: dir.appendingPathComponent("app/late-nul.txt"))
        // Too large.
        let big = String(repeating: "y", count: 12_000) + "\n" + secret
        try writeSecretScanFile(big, to: dir.appendingPathComponent("app/big.txt"))
        // Symbolic link to a file with a secret: not followed.
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("link.txt").path,
                                                   withDestinationPath: dir.appendingPathComponent("app/main.txt").path)

        let config = SecretScanConfig(maxFileBytes: 10_000)
        let result = SecretScanner.scan(root: dir.path, config: config)
        #expect(result.findings.map(\.file) == ["app/late-nul.txt", "app/main.txt"])
        #expect(result.findings.first?.line == 2)
        #expect(result.filesScanned == 2)
        #expect(result.skipped == ["app/big.txt (too large: \(big.utf8.count) bytes)", "app/blob.bin (binary)", "link.txt (symbolic link)"])

        // A single file as the root.
        let one = SecretScanner.scan(root: dir.appendingPathComponent("app/main.txt").path, config: config)
        #expect(one.findings.map(\.file) == ["main.txt"])
        #expect(one.filesScanned == 1)

        // Missing root: nothing, no crash.
        let missing = SecretScanner.scan(root: dir.appendingPathComponent("nope").path, config: config)
        #expect(missing.findings.isEmpty && missing.filesScanned == 0)
    }

    @Test func findingsSortedByFileLineColumn() throws {
        var p = PlantedSecrets()
        let dir = try makeSecretScanTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeSecretScanFile("\(p.npm)\n\n \(p.awsKeyID) \(p.stripe)\n", to: dir.appendingPathComponent("b.txt"))
        try writeSecretScanFile("\n\(p.gitlab)\n", to: dir.appendingPathComponent("a/z.txt"))
        try writeSecretScanFile("\(p.google)\n", to: dir.appendingPathComponent("a.txt"))
        let result = SecretScanner.scan(root: dir.path, config: SecretScanConfig())
        let got = result.findings.map { "\($0.file):\($0.line):\($0.column)" }
        #expect(got == ["a.txt:1:1", "a/z.txt:2:1", "b.txt:1:1", "b.txt:3:2", "b.txt:3:23"])
    }

    /// False-positive guard: the project's own sources and docs have no findings.
    @Test func repositorySourcesAndDocsHaveNoFindings() {
        for dir in ["Sources", "docs"] {
            let url = secretScanRepoRoot.appendingPathComponent(dir)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else {
                Issue.record("missing \(url.path)")
                continue
            }
            let result = SecretScanner.scan(root: url.path, config: SecretScanConfig())
            #expect(result.filesScanned > 0)
            #expect(result.findings.isEmpty, "\(dir): \(result.findings.map(\.description))")
        }
    }
}

// MARK: - Robustness and speed

@Suite struct SecretScannerRobustnessTests {
    @Test func randomInputNeverCrashes() {
        var rng = SecretScanRNG(seed: 0xF0221)
        var p = PlantedSecrets()
        let fragments = [p.awsKeyID, p.githubClassic, p.jwt, p.npm, p.slackWebhook, p.pem("RSA "), "-----" + "END",
                         "password = ", "aws_secret_access_key=", "\\n", "\"", "'", "=", ":", "\n", "\r\n", "é", "🚀",
                         "\u{FEFF}", "eyJ", "AKIA", "ghp_", "xoxb-", "hooks.slack.com/services/", "sha256:", "base64,",
                         "slipway:allow-secret", String(repeating: "A", count: 50), p.privateKeyBody]
        let configs = [SecretScanConfig(), SecretScanConfig(minimumEntropyLength: 0), SecretScanConfig(minimumEntropyLength: 1000)]
        for round in 0..<600 {
            var bytes: [UInt8] = []
            let length = Int(rng.next() % 600)
            while bytes.count < length {
                switch rng.next() % 4 {
                case 0: bytes.append(UInt8(truncatingIfNeeded: rng.next()))
                case 1: bytes.append(UInt8(32 + rng.next() % 95))
                default: bytes += Array(fragments[Int(rng.next() % UInt64(fragments.count))].utf8)
                }
            }
            let config = configs[round % configs.count]
            let findings = SecretScanner.scan(data: Data(bytes), file: "fuzz/\(round).txt", config: config)
            for f in findings {
                #expect(f.line >= 1 && f.column >= 1)
                #expect(SecretScanner.ruleIDs.contains(f.rule))
                #expect(f.masked == "***" || (f.masked.hasSuffix("…***") && f.masked.count <= 8))
                #expect(f.fingerprint.hasPrefix("\(f.rule):fuzz/\(round).txt:"))
            }
            // Allowlist parsing and globbing take arbitrary text too.
            let text = String(decoding: bytes, as: UTF8.self)
            let (list, _) = SecretAllowlist.parse(text)
            _ = list.excludes(path: String(text.prefix(40)))
            _ = ScanGlob.matches(glob: String(text.prefix(20)), path: String(text.dropFirst(20).prefix(60)))
        }
    }

    @Test func pathologicalGlobsAreFast() {
        let glob = String(repeating: "*a", count: 30) + "b"
        let path = String(repeating: "a", count: 200)
        let start = Date()
        #expect(!ScanGlob.matches(glob: glob, path: path))
        #expect(!ScanGlob.matches(glob: String(repeating: "**/", count: 20) + "x", path: String(repeating: "a/", count: 60)))
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test func longLinesAndManyFindings() {
        var rng = SecretScanRNG(seed: 3)
        var p = PlantedSecrets()
        // One 2 MB line of base64 text, and 2,000 secrets on one line.
        let blob = secretScanRandom(SecretScanAlphabet.base64, 2_000_000, &rng)
        #expect(rulesFound(blob).count <= 1)
        let many = Array(repeating: p.npm, count: 2000).joined(separator: " ")
        let f = scanText(many)
        #expect(f.count == 2000)
        #expect(f.last?.column == 1999 * 41 + 1)
    }

    @Test func throughput() {
        // Source-like text with a few secrets. Release builds scan 50 MB of this in about a second;
        // the bound here is loose so that debug builds on slow machines pass too.
        var p = PlantedSecrets()
        var text = ""
        let sample = """
        import Foundation

        /// Decodes a pipeline file and returns its jobs, sorted by name.
        public func load(path: String, token: String? = nil) throws -> [Job] {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let secret = environment["SLIPWAY_SECRET"] ?? ""
            guard !data.isEmpty else { throw LoadError.empty(path: path, line: 1, column: 1) }
            return try decoder.decode(Pipeline.self, from: data).jobs.sorted { $0.name < $1.name }
        }

        """
        while text.utf8.count < 4_000_000 { text += sample }
        text += "key = \(p.awsKeyID)\n"
        let data = Data(text.utf8)
        let start = Date()
        let f = SecretScanner.scan(data: data, file: "big.swift", config: SecretScanConfig())
        let elapsed = Date().timeIntervalSince(start)
        #expect(f.map(\.rule) == ["aws-access-key-id"])
        #expect(elapsed < 30, "4 MB took \(elapsed) s")
    }
}
