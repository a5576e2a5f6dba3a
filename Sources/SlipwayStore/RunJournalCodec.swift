import Foundation

/// One row write as the run journal holds it, ids already assigned: what `SQLRunStore.commit` would have
/// written, recorded now and applied to the tables later (`RunJournal`).
enum JournalWrite: Sendable, Equatable {
    case insertAttempt(AttemptRecord)
    case insertStep(StepRecord)
    case updateAttempt(AttemptRecord)
    case updateStep(StepRecord)
    case updateJob(JobRecord)
    case appendEvent(RunEventRecord)
}

/// The journal's binary format. A record is a 12-byte header (payload length as a little-endian UInt32,
/// FNV-1a 64 of the payload) and a payload (format version, write count, writes). The checksum tells a
/// whole record from one cut short by a crash or still being written by another process.
enum RunJournalCodec {
    static let version: UInt8 = 1
    static let headerSize = 12
    /// A record larger than this is damage, not data (a job's writes are a few KiB).
    static let maxPayload = 256 << 20

    enum DecodeError: Error {
        case damaged
        case newerVersion(UInt8)
    }

    /// The record of `writes`; nil when it would be larger than the format takes (`maxPayload`).
    static func record(_ writes: [JournalWrite]) -> [UInt8]? {
        var writer = Writer()
        writer.bytes.reserveCapacity(headerSize + 512 * writes.count)
        writer.bytes.append(contentsOf: repeatElement(0, count: headerSize))
        writer.byte(version)
        writer.uint32(UInt32(writes.count))
        for write in writes { writer.write(write) }
        let payload = writer.bytes.count - headerSize
        guard payload <= maxPayload else { return nil }
        let checksum = writer.bytes.withUnsafeBufferPointer { fnv1a(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[headerSize...])) }
        withUnsafeBytes(of: UInt32(payload).littleEndian) { writer.bytes.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: checksum.littleEndian) { writer.bytes.replaceSubrange(4..<12, with: $0) }
        return writer.bytes
    }

    static func records(in bytes: [UInt8]) -> Result<(records: [[JournalWrite]], length: Int, damaged: Bool), DecodeError> {
        bytes.withUnsafeBytes { buffer in
            do throws(DecodeError) {
                return .success(try records(in: buffer))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The whole records in `bytes` from its start: each record's writes, and how many bytes they take.
    /// Parsing stops at the first record cut short or damaged; `damaged` says it was not simply cut short.
    static func records(in bytes: UnsafeRawBufferPointer) throws(DecodeError) -> (records: [[JournalWrite]], length: Int, damaged: Bool) {
        var records: [[JournalWrite]] = []
        var offset = 0
        while bytes.count - offset >= headerSize {
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            let checksum = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt64.self).littleEndian
            guard length > 0, length <= maxPayload else { return (records, offset, true) }
            guard bytes.count - offset - headerSize >= length else { return (records, offset, false) }
            let payload = UnsafeRawBufferPointer(rebasing: bytes[(offset + headerSize)..<(offset + headerSize + length)])
            guard fnv1a(payload) == checksum else { return (records, offset, true) }
            var reader = Reader(bytes: payload)
            let format = try reader.byte()
            guard format == version else { throw .newerVersion(format) }
            let count = try reader.uint32()
            var writes: [JournalWrite] = []
            writes.reserveCapacity(Int(min(count, 64)))
            for _ in 0..<count { writes.append(try reader.write()) }
            guard reader.offset == payload.count else { throw .damaged }
            records.append(writes)
            offset += headerSize + length
        }
        return (records, offset, false)
    }

    static func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    struct Writer {
        var bytes: [UInt8] = []

        mutating func byte(_ value: UInt8) { bytes.append(value) }
        mutating func uint32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func int64(_ value: Int64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func double(_ value: Double) { int64(Int64(bitPattern: value.bitPattern)) }
        mutating func date(_ value: Date) { double(value.timeIntervalSince1970) }
        mutating func bool(_ value: Bool) { byte(value ? 1 : 0) }
        mutating func string(_ value: String) {
            var value = value
            value.withUTF8 { utf8 in
                uint32(UInt32(utf8.count))
                bytes.append(contentsOf: utf8)
            }
        }
        mutating func optional<T>(_ value: T?, _ write: (inout Writer, T) -> Void) {
            guard let value else { return byte(0) }
            byte(1)
            write(&self, value)
        }

        mutating func write(_ write: JournalWrite) {
            switch write {
            case .insertAttempt(let attempt): byte(1); self.attempt(attempt)
            case .insertStep(let step): byte(2); self.step(step)
            case .updateAttempt(let attempt): byte(3); self.attempt(attempt)
            case .updateStep(let step): byte(4); self.step(step)
            case .updateJob(let job): byte(5); self.job(job)
            case .appendEvent(let event): byte(6); self.event(event)
            }
        }

        mutating func attempt(_ a: AttemptRecord) {
            int64(a.id); int64(a.jobRowID); int64(Int64(a.number)); string(a.status.rawValue)
            optional(a.failure) { $0.string($1) }; date(a.startedAt); optional(a.finishedAt) { $0.date($1) }
        }

        mutating func step(_ s: StepRecord) {
            int64(s.id); int64(s.attemptID); int64(Int64(s.index)); string(s.name); string(s.status.rawValue)
            optional(s.exitCode) { $0.int64(Int64($1)) }; optional(s.failure) { $0.string($1) }; string(s.logPath)
            optional(s.processGroup) { $0.int64(Int64($1)) }; date(s.startedAt); optional(s.finishedAt) { $0.date($1) }
        }

        mutating func job(_ j: JobRecord) {
            int64(j.id); int64(j.runID); string(j.key); string(j.jobID); string(j.status.rawValue); bool(j.allowedFailure)
            optional(j.reason) { $0.string($1) }; int64(Int64(j.attempts)); string(j.outputs); optional(j.cacheKey) { $0.string($1) }
            optional(j.cacheComponents) { $0.string($1) }; bool(j.cacheHit); optional(j.definition) { $0.string($1) }
            optional(j.startedAt) { $0.date($1) }; optional(j.finishedAt) { $0.date($1) }
        }

        mutating func event(_ e: RunEventRecord) {
            int64(e.id); int64(e.runID); date(e.at); optional(e.jobKey) { $0.string($1) }; string(e.kind); string(e.message)
        }
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        mutating func take(_ count: Int) throws(DecodeError) -> UnsafeRawBufferPointer {
            guard count >= 0, bytes.count - offset >= count else { throw .damaged }
            defer { offset += count }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
        }

        mutating func byte() throws(DecodeError) -> UInt8 { try take(1)[0] }
        mutating func uint32() throws(DecodeError) -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
        mutating func int64() throws(DecodeError) -> Int64 { Int64(littleEndian: try take(8).loadUnaligned(as: Int64.self)) }
        mutating func int() throws(DecodeError) -> Int {
            guard let value = Int(exactly: try int64()) else { throw .damaged }
            return value
        }
        mutating func int32() throws(DecodeError) -> Int32 {
            guard let value = Int32(exactly: try int64()) else { throw .damaged }
            return value
        }
        mutating func double() throws(DecodeError) -> Double { Double(bitPattern: UInt64(bitPattern: try int64())) }
        mutating func date() throws(DecodeError) -> Date { Date(timeIntervalSince1970: try double()) }
        mutating func bool() throws(DecodeError) -> Bool {
            switch try byte() {
            case 0: false
            case 1: true
            default: throw .damaged
            }
        }
        mutating func string() throws(DecodeError) -> String {
            let count = Int(try uint32())
            return String(decoding: try take(count), as: UTF8.self)
        }
        mutating func present() throws(DecodeError) -> Bool { try bool() }
        mutating func optionalString() throws(DecodeError) -> String? { try present() ? try string() : nil }
        mutating func optionalDate() throws(DecodeError) -> Date? { try present() ? try date() : nil }
        mutating func optionalInt32() throws(DecodeError) -> Int32? { try present() ? try int32() : nil }
        mutating func status() throws(DecodeError) -> WorkStatus {
            guard let status = WorkStatus(rawValue: try string()) else { throw .damaged }
            return status
        }

        mutating func write() throws(DecodeError) -> JournalWrite {
            switch try byte() {
            case 1: .insertAttempt(try attempt())
            case 2: .insertStep(try step())
            case 3: .updateAttempt(try attempt())
            case 4: .updateStep(try step())
            case 5: .updateJob(try job())
            case 6: .appendEvent(try event())
            default: throw .damaged
            }
        }

        mutating func attempt() throws(DecodeError) -> AttemptRecord {
            AttemptRecord(id: try int64(), jobRowID: try int64(), number: try int(), status: try status(), failure: try optionalString(),
                          startedAt: try date(), finishedAt: try optionalDate())
        }

        mutating func step() throws(DecodeError) -> StepRecord {
            StepRecord(id: try int64(), attemptID: try int64(), index: try int(), name: try string(), status: try status(), exitCode: try optionalInt32(),
                       failure: try optionalString(), logPath: try string(), processGroup: try optionalInt32(), startedAt: try date(),
                       finishedAt: try optionalDate())
        }

        mutating func job() throws(DecodeError) -> JobRecord {
            JobRecord(id: try int64(), runID: try int64(), key: try string(), jobID: try string(), status: try status(), allowedFailure: try bool(),
                      reason: try optionalString(), attempts: try int(), outputs: try string(), cacheKey: try optionalString(),
                      cacheComponents: try optionalString(), cacheHit: try bool(), definition: try optionalString(), startedAt: try optionalDate(),
                      finishedAt: try optionalDate())
        }

        mutating func event() throws(DecodeError) -> RunEventRecord {
            RunEventRecord(id: try int64(), runID: try int64(), at: try date(), jobKey: try optionalString(), kind: try string(), message: try string())
        }
    }
}
