import Foundation

/// Replaces every occurrence of a secret — and of the common encodings of that secret — by `***`.
///
/// Variants masked for each secret:
/// - the value as is (and its whitespace-trimmed form when that differs);
/// - its base64 encoding, standard and URL-safe alphabet, padded and unpadded;
/// - the stable fragments of its base64 encoding when it is embedded in a longer base64 string
///   at byte alignment 0, 1 or 2 (only fragments of at least 4 characters), like the GitHub Actions runner;
/// - its percent-encoding (RFC 3986 unreserved characters kept, others `%XX` with uppercase hex), and the
///   lowercase-hex and `+`-for-space (form-encoded) variants;
/// - for a multi-line secret, each of its lines (trimmed), skipping lines shorter than 3 characters.
///
/// Secrets shorter than 3 characters after trimming whitespace are ignored: masking a value like `a` or `1`
/// would replace every occurrence of that letter in the logs and make them useless, while giving no real
/// protection to such a short value.
///
/// Overlapping occurrences (of one secret or of several) are merged and replaced by a single `***`.
///
/// The matcher works on bytes: a first-byte lookup table plus a two-byte filter skip quickly over text
/// that cannot start any variant, so masking runs at hundreds of MB/s; with no secrets, input is returned
/// untouched immediately.
public struct SecretMasker: Sendable {
    public static let mask = "***"
    static let maskBytes: [UInt8] = Array(mask.utf8)

    /// Minimum length (after trimming whitespace) of a secret or secret line to be masked.
    public static let minimumSecretLength = 3
    /// Minimum length of a base64 fragment to be masked.
    static let minimumFragmentLength = 4

    let matcher: SecretByteMatcher

    public init(secrets: [String]) {
        var variants = Set<[UInt8]>()
        for secret in secrets {
            for v in Self.variants(of: secret) { variants.insert(v) }
        }
        matcher = SecretByteMatcher(variants: Array(variants))
    }

    /// True when nothing would ever be masked.
    public var isEmpty: Bool { matcher.variants.isEmpty }

    /// Length in bytes of the longest masked variant (0 when empty).
    public var maxVariantLength: Int { matcher.maxLength }

    /// All byte sequences masked, longest first (for tests and diagnostics).
    var variants: [[UInt8]] { matcher.variants }

    public func mask(_ text: String) -> String {
        if isEmpty || text.isEmpty { return text }
        var text = text
        let result: String? = text.withUTF8 { buf -> String? in
            guard let out = matcher.maskedIfNeeded(buf) else { return nil }
            return String(decoding: out, as: UTF8.self)
        }
        return result ?? text
    }

    public func mask(_ bytes: [UInt8]) -> [UInt8] {
        if isEmpty || bytes.isEmpty { return bytes }
        return bytes.withUnsafeBufferPointer { matcher.maskedIfNeeded($0) } ?? bytes
    }

    // MARK: - Variants

    static func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C }

    static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = bytes
        while let f = s.first, isBlank(f) { s = s.dropFirst() }
        while let l = s.last, isBlank(l) { s = s.dropLast() }
        return s
    }

    static func variants(of secret: String) -> [[UInt8]] {
        let raw = Array(secret.utf8)
        let trimmedRaw = trimmed(raw[...])
        guard trimmedRaw.count >= minimumSecretLength else { return [] }
        var out: [[UInt8]] = [raw]
        if trimmedRaw.count != raw.count { out.append(Array(trimmedRaw)) }

        // Base64: full encodings and alignment fragments, both alphabets.
        var b64: [[UInt8]] = [base64(raw[...], padded: true), base64(raw[...], padded: false)]
        for offset in 0..<3 {
            let fragment = base64Fragment(raw, alignment: offset)
            if fragment.count >= minimumFragmentLength { b64.append(fragment) }
        }
        for v in b64 {
            out.append(v)
            out.append(v.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 })
        }

        // Percent-encodings.
        for upper in [true, false] {
            for plusForSpace in [false, true] {
                out.append(percentEncoded(raw, uppercase: upper, plusForSpace: plusForSpace))
            }
        }

        // Lines of a multi-line secret.
        if raw.contains(0x0A) {
            for line in raw.split(separator: 0x0A, omittingEmptySubsequences: true) {
                let t = trimmed(line)
                if t.count >= minimumSecretLength { out.append(Array(t)) }
            }
        }
        return out
    }

    static let base64Alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func base64(_ bytes: ArraySlice<UInt8>, padded: Bool) -> [UInt8] {
        let a = base64Alphabet
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = bytes.startIndex
        while i + 3 <= bytes.endIndex {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(a[Int(n >> 18 & 63)]); out.append(a[Int(n >> 12 & 63)])
            out.append(a[Int(n >> 6 & 63)]); out.append(a[Int(n & 63)])
            i += 3
        }
        let rest = bytes.endIndex - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(a[Int(n >> 18 & 63)]); out.append(a[Int(n >> 12 & 63)])
            if padded { out.append(UInt8(ascii: "=")); out.append(UInt8(ascii: "=")) }
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(a[Int(n >> 18 & 63)]); out.append(a[Int(n >> 12 & 63)]); out.append(a[Int(n >> 6 & 63)])
            if padded { out.append(UInt8(ascii: "=")) }
        }
        return out
    }

    /// The part of the base64 encoding of a longer byte stream that is determined by `bytes` alone, when
    /// `bytes` starts `alignment` bytes before a 3-byte group boundary of the stream (0: on the boundary,
    /// 1: as the last byte of a group, 2: as the second byte of a group).
    static func base64Fragment(_ bytes: [UInt8], alignment: Int) -> [UInt8] {
        guard bytes.count > alignment else { return [] }
        let a = base64Alphabet
        var out: [UInt8] = []
        if alignment == 1 {
            // bytes[0] is the third byte of a group: the group's 4th character is its low 6 bits.
            out.append(a[Int(bytes[0] & 63)])
        } else if alignment == 2 {
            // bytes[0], bytes[1] are the 2nd and 3rd bytes of a group: characters 3 and 4 are determined.
            guard bytes.count >= 2 else { return [] }
            out.append(a[Int((bytes[0] & 0x0F) << 2 | bytes[1] >> 6)])
            out.append(a[Int(bytes[1] & 63)])
        }
        let body = bytes[alignment...]
        let full = body.count / 3 * 3
        out += base64(body.prefix(full), padded: false)
        let tail = body.dropFirst(full)
        if tail.count == 1 {
            out.append(a[Int(tail[tail.startIndex] >> 2)])
        } else if tail.count == 2 {
            let b0 = tail[tail.startIndex], b1 = tail[tail.startIndex + 1]
            out.append(a[Int(b0 >> 2)])
            out.append(a[Int((b0 & 3) << 4 | b1 >> 4)])
        }
        return out
    }

    static func percentEncoded(_ bytes: [UInt8], uppercase: Bool, plusForSpace: Bool) -> [UInt8] {
        let hex: [UInt8] = Array((uppercase ? "0123456789ABCDEF" : "0123456789abcdef").utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3)
        for b in bytes {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: " ") where plusForSpace:
                out.append(UInt8(ascii: "+"))
            default:
                out.append(UInt8(ascii: "%")); out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            }
        }
        return out
    }
}

// MARK: - Byte matcher

/// Multi-pattern byte matcher: finds every occurrence of any variant, merges overlapping occurrences into
/// regions and renders the masked output.
struct SecretByteMatcher: Sendable {
    /// Variants, longest first.
    let variants: [[UInt8]]
    let maxLength: Int
    /// 256 entries: 1 when some variant starts with that byte.
    private let firstByte: [UInt8]
    /// 65536-bit set over (byte0 << 8 | byte1) of the first two bytes of every variant.
    private let pairBits: [UInt64]
    /// For every first byte, indices into `variants` (longest first).
    private let candidates: [[Int]]

    init(variants raw: [[UInt8]]) {
        let sorted = raw.filter { $0.count >= 2 }.sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
        variants = sorted
        maxLength = sorted.first?.count ?? 0
        var first = [UInt8](repeating: 0, count: 256)
        var pairs = [UInt64](repeating: 0, count: 1024)
        var cands = [[Int]](repeating: [], count: 256)
        for (i, v) in sorted.enumerated() {
            first[Int(v[0])] = 1
            let key = Int(v[0]) << 8 | Int(v[1])
            pairs[key >> 6] |= 1 << UInt64(key & 63)
            cands[Int(v[0])].append(i)
        }
        firstByte = first
        pairBits = pairs
        candidates = cands
    }

    /// Masked regions `[start, end)` (merged when overlapping), sorted, for occurrences starting before
    /// `limit` (an occurrence may extend past `limit` up to the end of the buffer).
    func regions(in p: UnsafeBufferPointer<UInt8>, limit: Int? = nil) -> [Range<Int>] {
        var out: [Range<Int>] = []
        guard let base = p.baseAddress, !variants.isEmpty else { return out }
        let n = p.count
        let scanEnd = min(limit ?? n, n - 1) // need two bytes for the pair filter; every variant has ≥ 2 bytes
        guard scanEnd > 0 else { return out }
        var regionStart = -1
        var regionEnd = -1
        firstByte.withUnsafeBufferPointer { first in
            pairBits.withUnsafeBufferPointer { pairs in
                let first = first.baseAddress!
                let pairs = pairs.baseAddress!
                var i = 0
                while i < scanEnd {
                    // Fast skip over bytes that cannot start a variant.
                    while i < scanEnd && first[Int(base[i])] == 0 { i &+= 1 }
                    if i >= scanEnd { break }
                    let key = Int(base[i]) << 8 | Int(base[i + 1])
                    if pairs[key >> 6] & (1 << UInt64(key & 63)) != 0 {
                        for idx in candidates[Int(base[i])] {
                            let count = variants[idx].count
                            if count > n - i { continue }
                            let equal = variants[idx].withUnsafeBufferPointer { v in
                                memcmp(v.baseAddress!, base + i, count) == 0
                            }
                            if equal {
                                let end = i + count
                                if i < regionEnd {
                                    if end > regionEnd { regionEnd = end }
                                } else {
                                    if regionStart >= 0 { out.append(regionStart..<regionEnd) }
                                    regionStart = i
                                    regionEnd = end
                                }
                                break // longest match at this position found
                            }
                        }
                    }
                    i &+= 1
                }
            }
        }
        if regionStart >= 0 { out.append(regionStart..<regionEnd) }
        return out
    }

    /// Renders `p[0..<end]` with the given regions (all within `0..<end`) replaced by the mask.
    static func render(_ p: UnsafeBufferPointer<UInt8>, end: Int, regions: [Range<Int>]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(end)
        var pos = 0
        for r in regions {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: p[pos..<r.lowerBound]))
            out.append(contentsOf: SecretMasker.maskBytes)
            pos = r.upperBound
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: p[pos..<end]))
        return out
    }

    /// The masked bytes, or nil when nothing needs masking.
    func maskedIfNeeded(_ p: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let r = regions(in: p)
        if r.isEmpty { return nil }
        return Self.render(p, end: p.count, regions: r)
    }

    func masked(_ p: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        maskedIfNeeded(p) ?? Array(p)
    }
}

// MARK: - Streaming

/// Streaming masker for a process output stream: handles a secret split across two writes.
///
/// Output is split into lines on `\n` (a trailing `\r` stays in the line). A line longer than `maxLineBytes`
/// is emitted in pieces of at most `maxLineBytes` bytes, never cutting through an occurrence of a secret
/// variant: the last `maxVariantLength - 1` bytes stay buffered until more data (or the end) arrives.
public struct StreamingMasker: Sendable {
    public let masker: SecretMasker
    public let maxLineBytes: Int
    private var buffer: [UInt8] = []

    public init(masker: SecretMasker, maxLineBytes: Int = 65536) {
        self.masker = masker
        self.maxLineBytes = max(1, maxLineBytes)
    }

    /// Bytes currently held back (the partial last line).
    public var bufferedByteCount: Int { buffer.count }

    /// Returns complete, masked lines (without the trailing "\n"); keeps the partial last line buffered.
    public mutating func feed(_ chunk: some Collection<UInt8>) -> [[UInt8]] {
        let handled: Void? = chunk.withContiguousStorageIfAvailable { buffer.append(contentsOf: $0) }
        if handled == nil { buffer.append(contentsOf: chunk) }
        var lines: [[UInt8]] = []
        let matcher = masker.matcher
        let maxLine = maxLineBytes
        let overlap = max(0, matcher.maxLength - 1)
        let consumed: Int = buffer.withUnsafeBufferPointer { all -> Int in
            guard let base = all.baseAddress else { return 0 }
            var start = 0
            let n = all.count
            while start < n {
                let remaining = n - start
                if let nl = memchr(base + start, 0x0A, remaining) {
                    let lineEnd = UnsafeRawPointer(nl) - UnsafeRawPointer(base)
                    let line = UnsafeBufferPointer(rebasing: all[start..<lineEnd])
                    if line.count > maxLine {
                        // Emit long lines in pieces; the final piece then holds the rest of the line.
                        var s = start
                        while lineEnd - s > maxLine {
                            let piece = Self.piece(UnsafeBufferPointer(rebasing: all[s..<lineEnd]), matcher: matcher,
                                                   maxLine: maxLine, overlap: 0)
                            lines.append(piece.bytes)
                            s += piece.consumed
                        }
                        lines.append(matcher.masked(UnsafeBufferPointer(rebasing: all[s..<lineEnd])))
                    } else {
                        lines.append(matcher.masked(line))
                    }
                    start = lineEnd + 1
                } else {
                    // Partial line: emit pieces only while it exceeds the limit.
                    while n - start > maxLine {
                        let piece = Self.piece(UnsafeBufferPointer(rebasing: all[start..<n]), matcher: matcher,
                                               maxLine: maxLine, overlap: overlap)
                        if piece.consumed == 0 { break }
                        lines.append(piece.bytes)
                        start += piece.consumed
                    }
                    break
                }
            }
            return start
        }
        if consumed > 0 { buffer.removeFirst(consumed) }
        return lines
    }

    /// Flushes the remaining partial line, masked.
    public mutating func finish() -> [[UInt8]] {
        defer { buffer = [] }
        if buffer.isEmpty { return [] }
        var lines: [[UInt8]] = []
        let matcher = masker.matcher
        let maxLine = maxLineBytes
        buffer.withUnsafeBufferPointer { all in
            var s = 0
            while all.count - s > maxLine {
                let piece = Self.piece(UnsafeBufferPointer(rebasing: all[s...]), matcher: matcher, maxLine: maxLine, overlap: 0)
                lines.append(piece.bytes)
                s += piece.consumed
            }
            lines.append(matcher.masked(UnsafeBufferPointer(rebasing: all[s...])))
        }
        return lines
    }

    /// Cuts one piece of at most `maxLine` bytes from the front of `p` (which is longer than `maxLine`),
    /// never through a masked occurrence, keeping at least `overlap` bytes after the cut when more data may
    /// follow. Returns the masked piece and how many input bytes it covers (0: nothing can be cut yet).
    private static func piece(_ p: UnsafeBufferPointer<UInt8>, matcher: SecretByteMatcher, maxLine: Int, overlap: Int)
        -> (bytes: [UInt8], consumed: Int)
    {
        var cut = min(maxLine, p.count - overlap)
        if cut <= 0 { return ([], 0) }
        // Occurrences starting before `cut` end at most `maxLength - 1` bytes after it: all visible in `p`.
        var regions = matcher.regions(in: p, limit: cut)
        if let last = regions.last, last.upperBound > cut {
            if last.lowerBound > 0 {
                cut = last.lowerBound
                regions.removeLast()
            } else {
                // A (pathologically long) chain of overlapping occurrences from the very start: emit it whole.
                cut = last.upperBound
            }
        }
        return (SecretByteMatcher.render(p, end: cut, regions: regions), cut)
    }
}
