import Foundation

/// Writes JSON exactly as Foundation's `JSONEncoder` with `.sortedKeys` does (keys in UTF-8 byte order, `/`
/// escaped as `\/`, control characters as `\b \f \n \r \t` or `\u00xx`, everything else as is), for the
/// types whose canonical form is on the engine's hot path: a run encodes every job's definition, and
/// `JSONEncoder` took more time than the job's own bookkeeping. The cache keys of existing caches depend on
/// these bytes, so `ResolvedJobCanonicalJSONTests` holds this writer to `JSONEncoder` on random jobs.
struct CanonicalJSONWriter {
    private(set) var bytes: [UInt8] = []
    private var needsComma = false

    init(capacity: Int = 512) { bytes.reserveCapacity(capacity) }

    mutating func beginObject() { open(UInt8(ascii: "{")) }
    mutating func endObject() { close(UInt8(ascii: "}")) }
    mutating func beginArray() { open(UInt8(ascii: "[")) }
    mutating func endArray() { close(UInt8(ascii: "]")) }

    private mutating func open(_ bracket: UInt8) {
        separate()
        bytes.append(bracket)
        needsComma = false
    }

    private mutating func close(_ bracket: UInt8) {
        bytes.append(bracket)
        needsComma = true
    }

    /// A key of the object being written; its value comes next.
    mutating func key(_ name: String) {
        separate()
        appendString(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ value: String) {
        separate()
        appendString(value)
        needsComma = true
    }

    mutating func bool(_ value: Bool) {
        separate()
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
        needsComma = true
    }

    mutating func integer(_ value: Int64) {
        separate()
        bytes.append(contentsOf: String(value).utf8)
        needsComma = true
    }

    mutating func strings(_ values: [String]) {
        beginArray()
        for value in values { string(value) }
        endArray()
    }

    /// A `[String: String]` as an object, its keys sorted as `JSONEncoder` sorts them.
    mutating func dictionary(_ values: [String: String]) {
        beginObject()
        // Byte order, not `String`'s `<` (which compares canonically: "e\u{301}" would sort as "é").
        for name in values.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            key(name)
            string(values[name]!)
        }
        endObject()
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private mutating func escape(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(byte)
    }

    private mutating func appendString(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): escape(byte)
            case 0x0A: escape(UInt8(ascii: "n"))
            case 0x0D: escape(UInt8(ascii: "r"))
            case 0x09: escape(UInt8(ascii: "t"))
            case 0x08: escape(UInt8(ascii: "b"))
            case 0x0C: escape(UInt8(ascii: "f"))
            case 0..<0x20:
                escape(UInt8(ascii: "u"))
                bytes.append(contentsOf: "00".utf8)
                bytes.append(Self.hexDigits[Int(byte >> 4)])
                bytes.append(Self.hexDigits[Int(byte & 0x0F)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension ResolvedJob {
    /// Canonical JSON (sorted keys) so equal definitions give equal digests: what `JSONEncoder` with
    /// `.sortedKeys` writes for this type, by hand (`CanonicalJSONWriter`). Keys are listed in sorted order.
    public func canonicalJSON() -> Data {
        var writer = CanonicalJSONWriter()
        writer.beginObject()
        writer.key("artifacts"); writer.strings(artifacts)
        if let cacheInputs { writer.key("cacheInputs"); writer.strings(cacheInputs) }
        if let deployArtifact { writer.key("deployArtifact"); writer.string(deployArtifact) }
        if let deployEnvironment { writer.key("deployEnvironment"); writer.string(deployEnvironment) }
        writer.key("env"); writer.dictionary(env)
        writer.key("jobID"); writer.string(jobID)
        writer.key("junitReports"); writer.strings(junitReports)
        writer.key("key"); writer.string(key)
        writer.key("matrix"); writer.dictionary(matrix)
        writer.key("outputs"); writer.strings(outputs)
        if let release {
            writer.key("release")
            writer.beginObject()
            writer.key("name"); writer.string(release.name)
            writer.key("path"); writer.string(release.path)
            writer.key("sbom"); writer.bool(release.sbom)
            writer.key("version"); writer.string(release.version)
            writer.endObject()
        }
        writer.key("steps")
        writer.beginArray()
        for step in steps {
            writer.beginObject()
            if let condition = step.condition { writer.key("condition"); writer.string(condition) }
            writer.key("continueOnError"); writer.bool(step.continueOnError)
            writer.key("env"); writer.dictionary(step.env)
            writer.key("name"); writer.string(step.name)
            writer.key("run"); writer.string(step.run)
            if let timeout = step.timeoutMilliseconds { writer.key("timeoutMilliseconds"); writer.integer(timeout) }
            if let uses = step.uses { writer.key("uses"); writer.string(uses.rawValue) }
            if let with = step.with { writer.key("with"); writer.dictionary(with) }
            if let directory = step.workingDirectory { writer.key("workingDirectory"); writer.string(directory) }
            writer.endObject()
        }
        writer.endArray()
        if let timeoutMilliseconds { writer.key("timeoutMilliseconds"); writer.integer(timeoutMilliseconds) }
        writer.endObject()
        return Data(writer.bytes)
    }
}
