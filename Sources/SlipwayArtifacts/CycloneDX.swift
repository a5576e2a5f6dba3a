import Foundation

/// CycloneDX 1.5 JSON SBOM generation (https://cyclonedx.org/docs/1.5/json/).
public enum CycloneDX {
    public static let specVersion = "1.5"
    public static let toolName = "slipway"

    /// Hash algorithms the 1.5 schema accepts, and the hex lengths it accepts for content.
    static let hashAlgorithms: Set<String> = ["MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "SHA3-256", "SHA3-384",
                                              "SHA3-512", "BLAKE2b-256", "BLAKE2b-384", "BLAKE2b-512", "BLAKE3"]
    static let hashLengths: Set<Int> = [32, 40, 64, 96, 128]

    /// A CycloneDX 1.5 JSON BOM: bomFormat, specVersion "1.5", serialNumber "urn:uuid:<deterministic uuid from
    /// the inputs>", version 1, metadata { timestamp (given), tools, component { type: application, name,
    /// version } }, components (sorted, unique bom-ref = purl; the same purl found in several lockfiles is
    /// listed once with one `slipway:sourceFile` property per lockfile), and a dependency entry saying the
    /// application depends on every component. Keys are sorted: the same inputs give the same bytes.
    public static func document(name: String, version: String, components: [Component], timestamp: Date,
                                toolVersion: String? = nil) -> Data {
        // Merge by purl, deterministically.
        var merged: [String: (component: Component, sources: Set<String>)] = [:]
        for component in components {
            if var entry = merged[component.purl] {
                entry.sources.insert(component.sourceFile)
                entry.component.hashes.merge(component.hashes) { first, _ in first }
                merged[component.purl] = entry
            } else {
                merged[component.purl] = (component, [component.sourceFile])
            }
        }
        let purls = merged.keys.sorted()
        let rootRef = "slipway:application/" + PackageURL.percentEncode(name) + "@" + PackageURL.percentEncode(version)

        let bomComponents: [BOMComponent] = purls.map { purl in
            let (component, sources) = merged[purl]!
            let hashes = component.hashes.keys.sorted().compactMap { alg -> BOMHash? in
                guard hashAlgorithms.contains(alg), let content = component.hashes[alg]?.lowercased(),
                      hashLengths.contains(content.count), RequirementsParser.isHex(content) else { return nil }
                return BOMHash(alg: alg, content: content)
            }
            var properties = [BOMProperty(name: "slipway:ecosystem", value: component.ecosystem.rawValue)]
            properties += sources.sorted().map { BOMProperty(name: "slipway:sourceFile", value: $0) }
            return BOMComponent(type: "library", bomRef: purl, name: component.name, version: component.version,
                                purl: purl, hashes: hashes.isEmpty ? nil : hashes, properties: properties)
        }

        let serial = serialNumber(name: name, version: version, purls: purls, components: bomComponents, timestamp: timestamp)
        let bom = BOM(
            schema: "http://cyclonedx.org/schema/bom-1.5.schema.json",
            bomFormat: "CycloneDX",
            specVersion: specVersion,
            serialNumber: serial,
            version: 1,
            metadata: BOMMetadata(
                timestamp: formatTimestamp(timestamp),
                tools: BOMTools(components: [BOMTool(type: "application", name: toolName, version: toolVersion)]),
                component: BOMComponent(type: "application", bomRef: rootRef, name: name, version: version,
                                        purl: nil, hashes: nil, properties: nil)),
            components: bomComponents,
            dependencies: [BOMDependency(ref: rootRef, dependsOn: purls)] + purls.map { BOMDependency(ref: $0, dependsOn: nil) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        // Every value is a string, an integer or a container of them: encoding cannot fail.
        return (try? encoder.encode(bom)) ?? Data()
    }

    /// RFC 3339 UTC with whole seconds (`2024-05-01T12:00:00Z`), as the schema's `date-time` format wants.
    static func formatTimestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// An RFC 4122 name-based (version 5, SHA-1) UUID of the BOM's content, in the URL namespace.
    static func serialNumber(name: String, version: String, purls: [String], components: [BOMComponent], timestamp: Date) -> String {
        var canonical = "slipway-sbom\n\(name)\n\(version)\n\(formatTimestamp(timestamp))\n"
        for component in components {
            canonical += component.bomRef
            for hash in component.hashes ?? [] { canonical += " \(hash.alg)=\(hash.content)" }
            for property in component.properties ?? [] { canonical += " \(property.name)=\(property.value)" }
            canonical += "\n"
        }
        return "urn:uuid:" + uuidV5(namespace: urlNamespace, name: canonical)
    }

    /// 6ba7b811-9dad-11d1-80b4-00c04fd430c8 (RFC 4122 appendix C).
    static let urlNamespace: [UInt8] = [0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8]

    static func uuidV5(namespace: [UInt8], name: String) -> String {
        var bytes = Array(sha1(namespace + Array(name.utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x50
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }

    /// FIPS 180-4 SHA-1, used only to derive UUIDv5 identifiers (not for security).
    static func sha1(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
        var data = message
        let bitLength = UInt64(message.count) &* 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                let b = chunk + i * 4
                w[i] = UInt32(data[b]) << 24 | UInt32(data[b + 1]) << 16 | UInt32(data[b + 2]) << 8 | UInt32(data[b + 3])
            }
            for i in 16..<80 {
                let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                w[i] = x << 1 | x >> 31
            }
            var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
            for i in 0..<80 {
                let f: UInt32, k: UInt32
                switch i {
                case 0..<20: f = (b & c) | (~b & d); k = 0x5A827999
                case 20..<40: f = b ^ c ^ d; k = 0x6ED9EBA1
                case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC
                default: f = b ^ c ^ d; k = 0xCA62C1D6
                }
                let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
                e = d; d = c; c = b << 30 | b >> 2; b = a; a = temp
            }
            h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d; h[4] = h[4] &+ e
        }
        return h.flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> UInt32(24 - $0 * 8)) } }
    }
}

// MARK: - Encodable document model

extension CycloneDX {
    struct BOM: Encodable {
        var schema: String
        var bomFormat: String
        var specVersion: String
        var serialNumber: String
        var version: Int
        var metadata: BOMMetadata
        var components: [BOMComponent]
        var dependencies: [BOMDependency]

        enum CodingKeys: String, CodingKey {
            case schema = "$schema", bomFormat, specVersion, serialNumber, version, metadata, components, dependencies
        }
    }

    struct BOMMetadata: Encodable {
        var timestamp: String
        var tools: BOMTools
        var component: BOMComponent
    }

    struct BOMTools: Encodable {
        var components: [BOMTool]
    }

    struct BOMTool: Encodable {
        var type: String
        var name: String
        var version: String?
    }

    struct BOMComponent: Encodable {
        var type: String
        var bomRef: String
        var name: String
        var version: String
        var purl: String?
        var hashes: [BOMHash]?
        var properties: [BOMProperty]?

        enum CodingKeys: String, CodingKey {
            case type, bomRef = "bom-ref", name, version, purl, hashes, properties
        }
    }

    struct BOMHash: Encodable {
        var alg: String
        var content: String
    }

    struct BOMProperty: Encodable {
        var name: String
        var value: String
    }

    struct BOMDependency: Encodable {
        var ref: String
        var dependsOn: [String]?
    }
}
