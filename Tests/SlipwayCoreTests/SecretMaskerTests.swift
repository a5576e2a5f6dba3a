import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayCore

/// Deterministic RNG for property-style tests.

private extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        return withUnsafeBufferPointer { hay in
            needle.withUnsafeBufferPointer { n in
                let h = hay.baseAddress!, p = n.baseAddress!
                var i = 0
                while i + n.count <= hay.count {
                    guard let hit = memchr(h + i, Int32(p[0]), hay.count - n.count + 1 - i) else { return false }
                    let at = UnsafeRawPointer(hit) - UnsafeRawPointer(h)
                    if memcmp(h + at, p, n.count) == 0 { return true }
                    i = at + 1
                }
                return false
            }
        }
    }
}

private func b64(_ s: [UInt8]) -> [UInt8] { Array(Data(s).base64EncodedString().utf8) }
private func b64url(_ s: [UInt8]) -> [UInt8] {
    b64(s).map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 }
}
private func b64unpadded(_ s: [UInt8]) -> [UInt8] { b64(s).filter { $0 != UInt8(ascii: "=") } }
private func percent(_ s: String) -> [UInt8] {
    var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
    allowed.insert(charactersIn: "-._~")
    return Array(s.addingPercentEncoding(withAllowedCharacters: allowed)!.utf8)
}

/// Characters used in random secrets: printable ASCII except `*` (a secret containing the mask could
/// re-form across a mask boundary) plus a few multi-byte UTF-8 characters.
private let secretAlphabet: [Character] = {
    var chars: [Character] = (0x21...0x7E).compactMap { $0 == 0x2A ? nil : Character(Unicode.Scalar(UInt8($0))) }
    chars += ["é", "ß", "Ж", "中", "🔑", "ü"]
    return chars
}()

private func randomSecret(_ rng: inout SplitMix64, length: ClosedRange<Int> = 6...40) -> String {
    let n = Int.random(in: length, using: &rng)
    return String((0..<n).map { _ in secretAlphabet.randomElement(using: &rng)! })
}

/// Random filler text: letters, digits, spaces, punctuation, some newlines and CRs, some UTF-8.
private func randomText(_ rng: inout SplitMix64, length: Int) -> [UInt8] {
    let pool: [UInt8] = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;=-_/+\"'{}[]()".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(length)
    while out.count < length {
        let r = UInt8.random(in: 0...99, using: &rng)
        if r < 3 { out.append(0x0A) }
        else if r < 4 { out += [0x0D, 0x0A] }
        else if r < 5 { out += Array("é".utf8) }
        else { out.append(pool.randomElement(using: &rng)!) }
    }
    return out
}

/// Feeds `input` to a streaming masker in random chunks; returns every emitted element.
private func streamMask(_ input: [UInt8], masker: SecretMasker, maxLineBytes: Int = 65536,
                        rng: inout SplitMix64, maxChunk: Int = 64) -> [[UInt8]]
{
    var stream = StreamingMasker(masker: masker, maxLineBytes: maxLineBytes)
    var out: [[UInt8]] = []
    var i = 0
    while i < input.count {
        let n = min(input.count - i, Int.random(in: 1...maxChunk, using: &rng))
        out += stream.feed(input[i..<(i + n)])
        i += n
    }
    out += stream.finish()
    return out
}

private func rejoin(_ lines: [[UInt8]], endsWithNewline: Bool) -> [UInt8] {
    var out = Array(lines.joined(separator: [0x0A]))
    if endsWithNewline { out.append(0x0A) }
    return out
}

@Suite struct SecretMaskerTests {
    @Test func masksPlainOccurrences() {
        let m = SecretMasker(secrets: ["hunter2"])
        #expect(m.mask("password is hunter2, again hunter2!") == "password is ***, again ***!")
        #expect(m.mask(Array("xhunter2".utf8)) == Array("x***".utf8))
        #expect(!m.isEmpty)
    }

    @Test func noSecretsReturnsInputUntouched() {
        let m = SecretMasker(secrets: [])
        #expect(m.isEmpty)
        let text = "nothing to see here 🔑"
        #expect(m.mask(text) == text)
        #expect(m.mask(Array(text.utf8)) == Array(text.utf8))
        var s = StreamingMasker(masker: m)
        #expect(s.feed(Array("a\nb".utf8)) == [Array("a".utf8)])
        #expect(s.finish() == [Array("b".utf8)])
    }

    @Test func shortSecretsAreIgnored() {
        let m = SecretMasker(secrets: ["a", "ab", "  x  ", "\n\t", ""])
        #expect(m.isEmpty)
        #expect(m.mask("a b ab abc") == "a b ab abc")
        let m3 = SecretMasker(secrets: ["abc"])
        #expect(m3.mask("xabcx") == "x***x")
    }

    @Test func trimmedSecretIsMaskedToo() {
        let m = SecretMasker(secrets: ["tok-123456\n"])
        #expect(m.mask("token: tok-123456 end") == "token: *** end")
    }

    @Test func masksBase64Forms() {
        let secret = "s3cr3t?>value~~"
        let bytes = Array(secret.utf8)
        let m = SecretMasker(secrets: [secret])
        for encoded in [b64(bytes), b64url(bytes), b64unpadded(bytes)] {
            let text = "auth=" + String(decoding: encoded, as: UTF8.self) + ";"
            #expect(m.mask(text) == "auth=***;")
        }
        // Padded form is masked completely (no leftover "=").
        let padded = b64(Array("abcd".utf8))
        #expect(padded.last == UInt8(ascii: "="))
        #expect(SecretMasker(secrets: ["abcd"]).mask(Array(padded)) == Array("***".utf8))
    }

    @Test func masksBase64EmbeddedInLongerBlob() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<300 {
            let secret = randomSecret(&rng, length: 6...30)
            let m = SecretMasker(secrets: [secret])
            let prefixLength = Int.random(in: 0...7, using: &rng)
            var prefix = Array("user:".utf8)
            prefix = Array(prefix.prefix(prefixLength)) + Array(repeating: UInt8(ascii: "x"), count: max(0, prefixLength - 5))
            let suffix = randomText(&rng, length: Int.random(in: 0...5, using: &rng))
            let blob = prefix + Array(secret.utf8) + suffix
            for encoded in [b64(blob), b64url(blob)] {
                let masked = m.mask(encoded)
                #expect(masked.contains(subsequence: Array("***".utf8)), "secret \(secret) prefix \(prefixLength)")
                // Only the characters that also depend on the surrounding bytes survive.
                #expect(masked.count - 3 <= (prefix.count + suffix.count) * 4 / 3 + 6,
                        "\(String(decoding: masked, as: UTF8.self)) for secret \(secret)")
            }
        }
    }

    @Test func basicAuthHeader() {
        let secret = "correct-horse-battery-staple"
        let m = SecretMasker(secrets: [secret])
        let header = "Authorization: Basic " + Data("deploy:\(secret)".utf8).base64EncodedString()
        let masked = m.mask(header)
        #expect(masked.contains("***"))
        #expect(masked.hasPrefix("Authorization: Basic "))
        // At most the few characters encoding the boundary with "deploy:" survive.
        #expect(masked.count <= "Authorization: Basic ".count + 12 + 3)
    }

    @Test func masksPercentEncodedForms() {
        let secret = "p@ss word/ü+1"
        let m = SecretMasker(secrets: [secret])
        let upper = percent(secret)
        #expect(String(decoding: upper, as: UTF8.self) == "p%40ss%20word%2F%C3%BC%2B1")
        #expect(m.mask("url=https://x/?p=p%40ss%20word%2F%C3%BC%2B1&a=b") == "url=https://x/?p=***&a=b")
        #expect(m.mask("p=p%40ss%20word%2f%c3%bc%2b1") == "p=***")
        #expect(m.mask("p=p%40ss+word%2F%C3%BC%2B1") == "p=***")
        #expect(m.mask("p=p%40ss+word%2f%c3%bc%2b1") == "p=***")
    }

    @Test func multiLineSecrets() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nab\r\nBKcwggSjAgEAAoIBAQC7\n-----END KEY-----\n"
        let m = SecretMasker(secrets: [key])
        // Whole secret.
        #expect(m.mask("key:\n" + key + "done") == "key:\n***done")
        // Each line on its own (e.g. printed line by line with a prefix).
        let printed = "> MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n> BKcwggSjAgEAAoIBAQC7\n> ab\n"
        #expect(m.mask(printed) == "> ***\n> ***\n> ab\n")
        // Streaming, line by line.
        var rng = SplitMix64(seed: 7)
        let out = streamMask(Array(("log start\n" + key + "log end\n").utf8), masker: m, rng: &rng, maxChunk: 5)
        let lines = out.map { String(decoding: $0, as: UTF8.self) }
        #expect(lines == ["log start", "***", "***", "ab\r", "***", "***", "log end"])
    }

    @Test func overlappingSecretsAreMaskedFully() {
        let m = SecretMasker(secrets: ["abcdef", "defghi"])
        #expect(m.mask("xxabcdefghixx") == "xx***xx")
        #expect(m.mask("abcdefabcdef") == "******")
        let r = SecretMasker(secrets: ["aaaa"])
        #expect(r.mask("baaaaaaaaab") == "b***b")
        let nested = SecretMasker(secrets: ["secret", "my-secret-value"])
        #expect(nested.mask("[my-secret-value] [secret]") == "[***] [***]")
    }

    @Test func utf8Secrets() {
        let m = SecretMasker(secrets: ["пароль-中文-🔑"])
        #expect(m.mask("é пароль-中文-🔑 é") == "é *** é")
        #expect(m.mask("é пароль-中文 é") == "é пароль-中文 é")
    }

    @Test func randomSecretsNeverLeak() {
        var rng = SplitMix64(seed: 0x5EC2E7)
        for round in 0..<150 {
            let secrets = (0..<Int.random(in: 1...4, using: &rng)).map { _ in randomSecret(&rng) }
            let masker = SecretMasker(secrets: secrets)
            var input: [UInt8] = []
            var forbidden: [[UInt8]] = []
            for s in secrets {
                let bytes = Array(s.utf8)
                forbidden += [bytes, b64(bytes), b64url(bytes), b64unpadded(bytes), percent(s)]
            }
            for _ in 0..<Int.random(in: 1...12, using: &rng) {
                input += randomText(&rng, length: Int.random(in: 0...80, using: &rng))
                input += forbidden.randomElement(using: &rng)!
            }
            input += randomText(&rng, length: Int.random(in: 0...40, using: &rng))

            let whole = masker.mask(input)
            for f in forbidden { #expect(!whole.contains(subsequence: f), "round \(round)") }

            let maxLine = Bool.random(using: &rng) ? 65536 : Int.random(in: 8...120, using: &rng)
            let lines = streamMask(input, masker: masker, maxLineBytes: maxLine, rng: &rng,
                                   maxChunk: Int.random(in: 1...50, using: &rng))
            for line in lines {
                #expect(line.count <= max(maxLine, 3))
                for f in forbidden { #expect(!line.contains(subsequence: f), "round \(round)") }
            }
            // Joined pieces and lines must not contain a secret either.
            let joined = Array(lines.joined())
            for f in forbidden { #expect(!joined.contains(subsequence: f), "round \(round)") }
        }
    }

    @Test func textWithoutSecretsPassesThroughByteIdentical() {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<100 {
            let secrets = (0..<3).map { _ in randomSecret(&rng, length: 14...30) }
            let masker = SecretMasker(secrets: secrets)
            let input = randomText(&rng, length: Int.random(in: 0...3000, using: &rng))
            #expect(masker.mask(input) == input)
            let text = String(decoding: input, as: UTF8.self)
            #expect(masker.mask(text) == text)
            let lines = streamMask(input, masker: masker, rng: &rng, maxChunk: Int.random(in: 1...300, using: &rng))
            #expect(rejoin(lines, endsWithNewline: input.last == 0x0A) == input)
            // Long lines cut in pieces still carry all bytes.
            let pieces = streamMask(input.filter { $0 != 0x0A }, masker: masker, maxLineBytes: 100, rng: &rng)
            #expect(Array(pieces.joined()) == input.filter { $0 != 0x0A })
            #expect(pieces.allSatisfy { $0.count <= 100 })
        }
    }

    @Test func secretSplitAcrossWrites() {
        let m = SecretMasker(secrets: ["split-secret-value"])
        var s = StreamingMasker(masker: m)
        #expect(s.feed(Array("first line\nthe value is split-se".utf8)) == [Array("first line".utf8)])
        #expect(s.feed(Array("cret-val".utf8)) == [])
        #expect(s.feed(Array("ue ok\r\nnext".utf8)) == [Array("the value is *** ok\r".utf8)])
        #expect(s.finish() == [Array("next".utf8)])
        #expect(s.finish() == [])
    }

    @Test func everySplitPointOfASecret() {
        let secret = "0123456789-secret"
        let m = SecretMasker(secrets: [secret])
        let input = Array("aaa \(secret) bbb".utf8)
        for cut in 0...input.count {
            var s = StreamingMasker(masker: m)
            var out = s.feed(input[0..<cut])
            out += s.feed(input[cut...])
            out += s.finish()
            #expect(out == [Array("aaa *** bbb".utf8)], "cut at \(cut)")
        }
    }

    @Test func longLinesAreEmittedInPiecesWithoutCuttingSecrets() {
        let secret = "LONGSECRETVALUE123"
        let m = SecretMasker(secrets: [secret])
        var rng = SplitMix64(seed: 3)
        for _ in 0..<50 {
            var line: [UInt8] = []
            for _ in 0..<20 {
                line += Array(repeating: UInt8(ascii: "x"), count: Int.random(in: 0...40, using: &rng))
                line += Array(secret.utf8)
            }
            let maxLine = Int.random(in: 10...64, using: &rng)
            let pieces = streamMask(line, masker: m, maxLineBytes: maxLine, rng: &rng, maxChunk: 33)
            #expect(pieces.count > 1)
            #expect(pieces.allSatisfy { $0.count <= max(maxLine, 3) })
            let joined = Array(pieces.joined())
            #expect(joined == m.mask(line))
            #expect(!joined.contains(subsequence: Array(secret.utf8)))
        }
        // Partial (unterminated) long line: at most maxLineBytes + overlap bytes stay buffered.
        var s = StreamingMasker(masker: m, maxLineBytes: 100)
        var emitted = 0
        for _ in 0..<100 { emitted += s.feed(Array(repeating: UInt8(ascii: "y"), count: 37)).reduce(0) { $0 + $1.count } }
        #expect(s.bufferedByteCount <= 100 + secret.utf8.count)
        emitted += s.finish().reduce(0) { $0 + $1.count }
        #expect(emitted == 3700)
    }

    @Test func chunkTypes() {
        let m = SecretMasker(secrets: ["abc-secret"])
        var s = StreamingMasker(masker: m)
        #expect(s.feed(Data("x abc-secret\n".utf8)) == [Array("x ***".utf8)])
        #expect(s.feed(Array("abc-".utf8)[...]) == [])
        #expect(s.feed("secret\n".utf8) == [Array("***".utf8)])
    }

    /// Masks a large buffer of random text (speed is measured in bench/, not asserted here).
    @Test func largeBufferKeepsLengthWhenNoSecretOccurs() {
        var rng = SplitMix64(seed: 1)
        let secrets = (0..<5).map { _ in randomSecret(&rng, length: 12...32) }
        let m = SecretMasker(secrets: secrets)
        var text: [UInt8] = []
        let line = randomText(&rng, length: 4000)
        while text.count < 8_000_000 { text += line }
        let out = m.mask(text)
        #expect(out.count == text.count)
        #expect(out == text)
    }
}
