import Crypto
import Foundation
import SlipwayCore

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
        let hex = bytes.hexString
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }

    /// SHA-1 only for the UUIDv5 serial number, as RFC 4122 specifies (not for security).
    static func sha1(_ message: [UInt8]) -> [UInt8] { Array(Insecure.SHA1.hash(data: message)) }
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
