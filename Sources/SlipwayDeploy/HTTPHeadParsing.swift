import NIOCore
import NIOHTTP1

// A small, strict HTTP/1.1 head scanner for the proxy's fast path: it reads only what routing and framing need
// and copies the head through, dropping or appending a few lines, without materialising header strings.
//
// The request scanner accepts a conservative subset of HTTP/1.1 (the common methods, RFC 3986 targets, CRLF line
// ends, token names, no obs-fold, one
// Content-Length or one `Transfer-Encoding: chunked`, no Expect / Upgrade, `Connection` naming only close/keep-alive, heads up to
// `fastPathMaxHeadBytes`). Anything else is `.unsupported`: the connection then falls back to the NIOHTTP1 path,
// whose parser (llhttp) gives the same answers as before — 400 for malformed input, 431 for oversized heads.

/// Largest request head handled by the fast path; larger ones go to the NIOHTTP1 path (which applies the limits).
let fastPathMaxHeadBytes = 16 * 1024

struct ParsedRequestHead {
    /// Bytes of the head in the input, final empty line included.
    var length = 0
    var contentLength = 0
    /// `Transfer-Encoding: chunked` (the only transfer coding the fast path takes).
    var chunked = false
    var keepAlive = true
    var isHead = false
}

enum RequestHeadOutcome {
    case incomplete
    case unsupported
    case parsed(ParsedRequestHead)
}

struct ParsedResponseHead {
    enum Framing: Equatable {
        case none
        case length(Int)
        case chunked
        case untilClose
    }

    var length = 0
    var status = 0
    var framing = Framing.none
    /// The backend keeps the connection open after this response.
    var keepAlive = true
}

enum ResponseHeadOutcome {
    case incomplete
    case invalid
    case parsed(ParsedResponseHead)
    /// `Connection` names other headers (lower-cased): scan again, dropping those too.
    case namesHeaders([[UInt8]])
}

@inline(__always)
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
    default: return false
    }
}

@inline(__always)
private func isValueByte(_ byte: UInt8) -> Bool {
    byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
}

@inline(__always)
private func lower(_ byte: UInt8) -> UInt8 {
    (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
}

/// `bytes[start..<start+count]` equals the lower-case ASCII `literal`, ignoring case.
@inline(__always)
private func equalsLower(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ count: Int, _ literal: StaticString) -> Bool {
    guard count == literal.utf8CodeUnitCount else { return false }
    let expected = literal.utf8Start
    for offset in 0..<count where lower(bytes[start + offset]) != expected[offset] {
        return false
    }
    return true
}

private enum HeaderKind {
    case other, contentLength, transferEncoding, connection, expect, upgrade, te, keepAlive, proxyConnection
    case forwardedFor
}

@inline(__always)
private func classify(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ count: Int) -> HeaderKind {
    switch count {
    case 2: return equalsLower(bytes, start, 2, "te") ? .te : .other
    case 6: return equalsLower(bytes, start, 6, "expect") ? .expect : .other
    case 7: return equalsLower(bytes, start, 7, "upgrade") ? .upgrade : .other
    case 10:
        if equalsLower(bytes, start, 10, "connection") { return .connection }
        return equalsLower(bytes, start, 10, "keep-alive") ? .keepAlive : .other
    case 14: return equalsLower(bytes, start, 14, "content-length") ? .contentLength : .other
    case 15: return equalsLower(bytes, start, 15, "x-forwarded-for") ? .forwardedFor : .other
    case 16: return equalsLower(bytes, start, 16, "proxy-connection") ? .proxyConnection : .other
    case 17: return equalsLower(bytes, start, 17, "transfer-encoding") ? .transferEncoding : .other
    default: return .other
    }
}

/// One header line: name range, trimmed value range, and where the line ends (after its LF).
private struct HeaderLine {
    var nameStart = 0
    var nameEnd = 0
    var valueStart = 0
    var valueEnd = 0
    var end = 0
}

private enum LineOutcome {
    case line(HeaderLine)
    /// The empty line ending the head; `end` is after its LF.
    case endOfHead(end: Int)
    case incomplete
    case invalid
}

/// Scans the header line (or final empty line) starting at `start`.
@inline(__always)
private func scanHeaderLine(_ bytes: UnsafeRawBufferPointer, from start: Int) -> LineOutcome {
    let count = bytes.count
    var index = start
    guard index < count else { return .incomplete }
    if bytes[index] == 0x0D {
        guard index + 1 < count else { return .incomplete }
        return bytes[index + 1] == 0x0A ? .endOfHead(end: index + 2) : .invalid
    }
    var line = HeaderLine()
    line.nameStart = index
    while index < count, isTokenByte(bytes[index]) { index += 1 }
    guard index < count else { return .incomplete }
    guard index > start, bytes[index] == UInt8(ascii: ":") else { return .invalid }
    line.nameEnd = index
    index += 1
    while index < count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
    line.valueStart = index
    var valueEnd = index
    while index < count {
        let byte = bytes[index]
        if byte == 0x0D { break }
        guard isValueByte(byte) else { return .invalid }
        index += 1
        if byte != 0x20 && byte != 0x09 { valueEnd = index }
    }
    guard index + 1 < count else { return .incomplete }
    guard bytes[index + 1] == 0x0A else { return .invalid }
    line.valueEnd = valueEnd
    line.end = index + 2
    return .line(line)
}

/// Parses a decimal Content-Length value, or nil.
@inline(__always)
private func parseLength(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
    guard end > start, end - start <= 15 else { return nil }
    var value = 0
    for index in start..<end {
        let digit = bytes[index] &- 0x30
        guard digit < 10 else { return nil }
        value = value * 10 + Int(digit)
    }
    return value
}

/// Calls `body` with each comma-separated token of a header value (trimmed, possibly empty).
@inline(__always)
private func forEachToken(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ body: (Int, Int) -> Void) {
    var index = start
    while index <= end {
        var tokenStart = index
        while index < end, bytes[index] != UInt8(ascii: ",") { index += 1 }
        var tokenEnd = index
        while tokenStart < tokenEnd, bytes[tokenStart] == 0x20 || bytes[tokenStart] == 0x09 { tokenStart += 1 }
        while tokenEnd > tokenStart, bytes[tokenEnd - 1] == 0x20 || bytes[tokenEnd - 1] == 0x09 { tokenEnd -= 1 }
        body(tokenStart, tokenEnd)
        index += 1
    }
}

@inline(__always)
private func write(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, to out: inout ByteBuffer) {
    if end > start {
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
    }
}

private enum KnownMethod {
    case head, other, unknown
}

@inline(__always)
private func knownMethod(_ bytes: UnsafeRawBufferPointer, length: Int) -> KnownMethod {
    @inline(__always) func matches(_ literal: StaticString) -> Bool {
        guard length == literal.utf8CodeUnitCount else { return false }
        for offset in 0..<length where bytes[offset] != literal.utf8Start[offset] { return false }
        return true
    }
    switch length {
    case 3: return matches("GET") || matches("PUT") ? .other : .unknown
    case 4: return matches("HEAD") ? .head : (matches("POST") ? .other : .unknown)
    case 5: return matches("PATCH") || matches("TRACE") ? .other : .unknown
    case 6: return matches("DELETE") ? .other : .unknown
    case 7: return matches("OPTIONS") ? .other : .unknown
    default: return .unknown
    }
}

/// RFC 3986 characters of a request target (origin, absolute or asterisk form).
@inline(__always)
private func isTargetByte(_ byte: UInt8) -> Bool {
    switch byte {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    // - . _ ~ : / ? # [ ] @ ! $ & ' ( ) * + , ; = %
    case 0x2D, 0x2E, 0x5F, 0x7E, 0x3A, 0x2F, 0x3F, 0x23, 0x5B, 0x5D, 0x40, 0x21, 0x24, 0x26, 0x27, 0x28, 0x29,
        0x2A, 0x2B, 0x2C, 0x3B, 0x3D, 0x25:
        return true
    default: return false
    }
}

/// Scans a request head at the start of `bytes`. On `.parsed`, `out` holds the head to send to the backend minus
/// its final empty line, with the hop-by-hop headers and X-Forwarded-For removed (the caller appends the new
/// X-Forwarded-For, whose previous values are put in `forwardedFor`). When `headers` is non-nil, every header is
/// added to it (for routing rules and cookies).
func parseRequestHead(
    _ bytes: UnsafeRawBufferPointer,
    maxHeaderCount: Int,
    into out: inout ByteBuffer,
    forwardedFor: inout [UInt8],
    headers: inout HTTPHeaders?
) -> RequestHeadOutcome {
    let count = bytes.count
    let tooLong = count >= fastPathMaxHeadBytes
    // Request line: method SP target SP HTTP/1.1 CRLF
    var index = 0
    while index < count, isTokenByte(bytes[index]) { index += 1 }
    guard index < count else { return tooLong ? .unsupported : .incomplete }
    guard index > 0, bytes[index] == 0x20 else { return .unsupported }
    var result = ParsedRequestHead()
    // The common methods only (llhttp on the NIOHTTP1 path knows the rest, and rejects unknown ones).
    switch knownMethod(bytes, length: index) {
    case .head: result.isHead = true
    case .other: break
    case .unknown: return .unsupported
    }
    index += 1
    let targetStart = index
    while index < count, isTargetByte(bytes[index]) { index += 1 }
    guard index < count else { return tooLong ? .unsupported : .incomplete }
    guard index > targetStart, bytes[index] == 0x20 else { return .unsupported }
    index += 1
    guard count - index >= 10 else { return .incomplete }
    // "HTTP/1.1\r\n"
    guard bytes[index] == UInt8(ascii: "H"), bytes[index + 1] == UInt8(ascii: "T"), bytes[index + 2] == UInt8(ascii: "T"),
        bytes[index + 3] == UInt8(ascii: "P"), bytes[index + 4] == UInt8(ascii: "/"), bytes[index + 5] == UInt8(ascii: "1"),
        bytes[index + 6] == UInt8(ascii: "."), bytes[index + 7] == UInt8(ascii: "1"), bytes[index + 8] == 0x0D,
        bytes[index + 9] == 0x0A
    else { return .unsupported }
    index += 10

    var runStart = 0
    var headerCount = 0
    var sawContentLength = false
    while true {
        switch scanHeaderLine(bytes, from: index) {
        case .incomplete:
            return tooLong ? .unsupported : .incomplete
        case .invalid:
            return .unsupported
        case .endOfHead(let end):
            guard end <= fastPathMaxHeadBytes, !(sawContentLength && result.chunked) else { return .unsupported }
            write(bytes, runStart, index, to: &out)
            result.length = end
            return .parsed(result)
        case .line(let line):
            headerCount += 1
            guard headerCount <= maxHeaderCount, line.end <= fastPathMaxHeadBytes else { return .unsupported }
            var drop = false
            switch classify(bytes, line.nameStart, line.nameEnd - line.nameStart) {
            case .other:
                break
            case .contentLength:
                guard !sawContentLength, let length = parseLength(bytes, line.valueStart, line.valueEnd) else {
                    return .unsupported
                }
                sawContentLength = true
                result.contentLength = length
            case .transferEncoding:
                guard !result.chunked, equalsLower(bytes, line.valueStart, line.valueEnd - line.valueStart, "chunked")
                else { return .unsupported }
                result.chunked = true
            case .expect, .upgrade:
                return .unsupported
            case .connection:
                var namesOthers = false
                forEachToken(bytes, line.valueStart, line.valueEnd) { start, end in
                    if equalsLower(bytes, start, end - start, "close") {
                        result.keepAlive = false
                    } else if end > start, !equalsLower(bytes, start, end - start, "keep-alive") {
                        namesOthers = true
                    }
                }
                if namesOthers { return .unsupported }
                drop = true
            case .te, .keepAlive, .proxyConnection:
                drop = true
            case .forwardedFor:
                if !forwardedFor.isEmpty { forwardedFor.append(contentsOf: ", ".utf8) }
                forwardedFor.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[line.valueStart..<line.valueEnd]))
                drop = true
            }
            if drop {
                write(bytes, runStart, index, to: &out)
                runStart = line.end
            }
            if headers != nil {
                headers!.add(
                    name: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[line.nameStart..<line.nameEnd]), as: UTF8.self),
                    value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[line.valueStart..<line.valueEnd]), as: UTF8.self)
                )
            }
            index = line.end
        }
    }
}

/// Scans a response head at the start of `bytes`. On `.parsed`, `out` holds the head to send to an HTTP/1.1
/// client minus its final empty line: status line with version HTTP/1.1, hop-by-hop headers (and those named in
/// `dropping`) removed, and Transfer-Encoding removed from bodiless responses.
func parseResponseHead(
    _ bytes: UnsafeRawBufferPointer,
    maxLength: Int,
    isHeadRequest: Bool,
    dropping named: [[UInt8]],
    into out: inout ByteBuffer
) -> ResponseHeadOutcome {
    let count = bytes.count
    let tooLong = count >= maxLength
    // "HTTP/1.x SSS"
    guard count >= 12 else { return tooLong ? .invalid : .incomplete }
    guard bytes[0] == UInt8(ascii: "H"), bytes[1] == UInt8(ascii: "T"), bytes[2] == UInt8(ascii: "T"),
        bytes[3] == UInt8(ascii: "P"), bytes[4] == UInt8(ascii: "/"), bytes[5] == UInt8(ascii: "1"),
        bytes[6] == UInt8(ascii: "."), bytes[7] == UInt8(ascii: "0") || bytes[7] == UInt8(ascii: "1"),
        bytes[8] == 0x20
    else { return .invalid }
    let isHTTP10 = bytes[7] == UInt8(ascii: "0")
    var status = 0
    for index in 9..<12 {
        let digit = bytes[index] &- 0x30
        guard digit < 10 else { return .invalid }
        status = status * 10 + Int(digit)
    }
    guard status >= 100 else { return .invalid }
    var index = 12
    while index < count, bytes[index] != 0x0D {
        guard index > 12 || bytes[index] == 0x20, isValueByte(bytes[index]) else { return .invalid }
        index += 1
    }
    guard index + 1 < count else { return tooLong ? .invalid : .incomplete }
    guard bytes[index + 1] == 0x0A else { return .invalid }
    index += 2
    out.writeStaticString("HTTP/1.1")
    var runStart = 8

    var result = ParsedResponseHead()
    result.status = status
    let bodyless = isHeadRequest || status == 204 || status == 304 || status < 200
    var contentLength: Int?
    var chunked: Bool?
    var sawClose = false
    var sawKeepAlive = false
    var namedHeaders: [[UInt8]] = []
    while true {
        switch scanHeaderLine(bytes, from: index) {
        case .incomplete:
            return tooLong ? .invalid : .incomplete
        case .invalid:
            return .invalid
        case .endOfHead(let end):
            guard end <= maxLength else { return .invalid }
            if !namedHeaders.isEmpty, named.isEmpty { return .namesHeaders(namedHeaders) }
            write(bytes, runStart, index, to: &out)
            result.length = end
            result.keepAlive = !sawClose && (!isHTTP10 || sawKeepAlive)
            if bodyless {
                result.framing = .none
            } else if let chunked {
                if contentLength != nil { return .invalid }
                result.framing = chunked ? .chunked : .untilClose
            } else if let contentLength {
                result.framing = contentLength == 0 ? .none : .length(contentLength)
            } else {
                result.framing = .untilClose
            }
            if result.framing == .untilClose { result.keepAlive = false }
            return .parsed(result)
        case .line(let line):
            guard line.end <= maxLength else { return .invalid }
            var drop = false
            let nameCount = line.nameEnd - line.nameStart
            switch classify(bytes, line.nameStart, nameCount) {
            case .other, .expect, .forwardedFor:
                if !named.isEmpty {
                    for name in named where name.count == nameCount {
                        var same = true
                        for offset in 0..<nameCount where lower(bytes[line.nameStart + offset]) != name[offset] {
                            same = false
                            break
                        }
                        if same {
                            drop = true
                            break
                        }
                    }
                }
            case .contentLength:
                guard let length = parseLength(bytes, line.valueStart, line.valueEnd) else { return .invalid }
                if let contentLength, contentLength != length { return .invalid }
                contentLength = length
            case .transferEncoding:
                var last = false
                forEachToken(bytes, line.valueStart, line.valueEnd) { start, end in
                    if end > start { last = equalsLower(bytes, start, end - start, "chunked") }
                }
                chunked = last
                drop = bodyless
            case .connection:
                forEachToken(bytes, line.valueStart, line.valueEnd) { start, end in
                    let length = end - start
                    if equalsLower(bytes, start, length, "close") {
                        sawClose = true
                    } else if equalsLower(bytes, start, length, "keep-alive") {
                        sawKeepAlive = true
                    } else if length > 0, named.isEmpty,
                        !equalsLower(bytes, start, length, "content-length"),
                        !equalsLower(bytes, start, length, "transfer-encoding")
                    {
                        namedHeaders.append((start..<end).map { lower(bytes[$0]) })
                    }
                }
                drop = true
            case .te, .keepAlive, .proxyConnection, .upgrade:
                drop = true
            }
            if drop {
                write(bytes, runStart, index, to: &out)
                runStart = line.end
            }
            index = line.end
        }
    }
}

/// Finds the end of a chunked body by its framing alone (RFC 9112 §7.1), passing the bytes through.
struct ChunkedScanner {
    private enum State: UInt8 {
        case size, sizeExtension, sizeLF, data, dataCR, dataLF, trailerStart, trailer, trailerLF, finalLF, done
    }

    private var state = State.size
    private var size = 0
    private var digits = 0

    var isDone: Bool { self.state == .done }

    /// Consumes bytes up to the end of the body; returns how many, or nil if the framing is malformed.
    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let count = bytes.count
        var index = 0
        while index < count {
            let byte = bytes[index]
            switch self.state {
            case .size:
                if let value = hexValue(byte) {
                    guard self.digits < 15 else { return nil }
                    self.size = self.size << 4 | value
                    self.digits += 1
                } else if self.digits > 0, byte == 0x0D {
                    self.state = .sizeLF
                } else if self.digits > 0, byte == UInt8(ascii: ";") || byte == 0x20 || byte == 0x09 {
                    self.state = .sizeExtension
                } else {
                    return nil
                }
                index += 1
            case .sizeExtension:
                if byte == 0x0D {
                    self.state = .sizeLF
                } else if byte == 0x0A {
                    return nil
                }
                index += 1
            case .sizeLF:
                guard byte == 0x0A else { return nil }
                index += 1
                if self.size == 0 {
                    self.state = .trailerStart
                } else {
                    self.state = .data
                }
            case .data:
                let take = min(self.size, count - index)
                index += take
                self.size -= take
                if self.size == 0 { self.state = .dataCR }
            case .dataCR:
                guard byte == 0x0D else { return nil }
                self.state = .dataLF
                index += 1
            case .dataLF:
                guard byte == 0x0A else { return nil }
                self.state = .size
                self.digits = 0
                self.size = 0
                index += 1
            // A bare LF ends a line for lenient peers: accepting it inside trailers would let a request
            // hidden there (`0\r\n\nGET /x …`) reach the backend as a request of its own.
            case .trailerStart:
                guard byte != 0x0A else { return nil }
                self.state = byte == 0x0D ? .finalLF : .trailer
                index += 1
            case .trailer:
                guard byte != 0x0A else { return nil }
                if byte == 0x0D { self.state = .trailerLF }
                index += 1
            case .trailerLF:
                guard byte == 0x0A else { return nil }
                self.state = .trailerStart
                index += 1
            case .finalLF:
                guard byte == 0x0A else { return nil }
                self.state = .done
                return index + 1
            case .done:
                return index
            }
        }
        return index
    }
}

@inline(__always)
private func hexValue(_ byte: UInt8) -> Int? {
    switch byte {
    case 0x30...0x39: return Int(byte - 0x30)
    case 0x41...0x46: return Int(byte - 0x41 + 10)
    case 0x61...0x66: return Int(byte - 0x61 + 10)
    default: return nil
    }
}
