import Foundation

/// OSV ecosystem names (https://ossf.github.io/osv-schema/#affectedpackage-field) of the lockfile formats
/// Slipway understands.
public enum Ecosystem: String, Sendable, Codable, CaseIterable {
    case swift = "SwiftURL", pypi = "PyPI", npm = "npm", cargo = "crates.io", go = "Go"

    /// The package-url type (https://github.com/package-url/purl-spec) of this ecosystem.
    public var purlType: String {
        switch self {
        case .swift: "swift"
        case .pypi: "pypi"
        case .npm: "npm"
        case .cargo: "cargo"
        case .go: "golang"
        }
    }
}

/// One third-party dependency found in a lockfile.
public struct Component: Sendable, Codable, Equatable, Hashable {
    public var ecosystem: Ecosystem
    /// The package name as the ecosystem's advisories spell it: `lodash`, `@babel/core`, `requests`
    /// (PEP 503 normalized), `serde`, `github.com/pkg/errors`, `github.com/apple/swift-nio`.
    public var name: String
    public var version: String
    /// Package URL, also the CycloneDX `bom-ref`.
    public var purl: String
    /// Path of the lockfile, relative to the scanned root.
    public var sourceFile: String
    /// CycloneDX hash algorithm name (`SHA-256`, `SHA-512`, …) → lowercase hex, when the lockfile has them.
    public var hashes: [String: String]

    public init(ecosystem: Ecosystem, name: String, version: String, purl: String? = nil,
                sourceFile: String, hashes: [String: String] = [:]) {
        self.ecosystem = ecosystem
        self.name = name
        self.version = version
        self.purl = purl ?? PackageURL.make(ecosystem: ecosystem, name: name, version: version)
        self.sourceFile = sourceFile
        self.hashes = hashes
    }
}

/// Package URL construction (https://github.com/package-url/purl-spec).
public enum PackageURL {
    /// `pkg:<type>/<namespace…>/<name>@<version>` with every segment percent-encoded
    /// (so `@scope/name` becomes `%40scope/name` and a `+` in a version becomes `%2B`).
    public static func make(ecosystem: Ecosystem, name: String, version: String) -> String {
        var segments: [String]
        switch ecosystem {
        case .pypi:
            segments = [PyPI.normalize(name)]
        case .npm, .go, .swift:
            // npm: `@scope/name`; Go and Swift: host/owner/name. Every path segment is encoded on its own.
            segments = name.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            if ecosystem == .swift, segments.count == 1 {
                // A registry identity `scope.name`.
                let parts = segments[0].split(separator: ".", maxSplits: 1).map(String.init)
                if parts.count == 2 { segments = parts }
            }
        case .cargo:
            segments = [name]
        }
        if segments.isEmpty { segments = [name] }
        let path = segments.map(percentEncode).joined(separator: "/")
        return "pkg:\(ecosystem.purlType)/\(path)@\(percentEncode(version))"
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}

/// Python packaging helpers.
public enum PyPI {
    /// PEP 503 name normalization: runs of `-`, `_`, `.` become one `-`, lowercased.
    public static func normalize(_ name: String) -> String {
        var out = ""
        var lastWasSeparator = false
        for ch in name.lowercased() {
            if ch == "-" || ch == "_" || ch == "." {
                if !lastWasSeparator { out.append("-") }
                lastWasSeparator = true
            } else {
                out.append(ch)
                lastWasSeparator = false
            }
        }
        return out
    }
}

/// Swift package helpers.
public enum SwiftPackageName {
    /// A repository URL as OSV's `SwiftURL` ecosystem names it: no scheme, no user, no `.git`, lowercase host.
    /// `https://github.com/apple/swift-nio.git` and `git@github.com:apple/swift-nio.git` both give
    /// `github.com/apple/swift-nio`.
    public static func normalize(_ location: String) -> String {
        var text = location.trimmingCharacters(in: .whitespacesAndNewlines)
        var hadScheme = false
        if let range = text.range(of: "://") {
            text = String(text[range.upperBound...])
            hadScheme = true
        }
        // user@host
        if let at = text.firstIndex(of: "@"), at < (text.firstIndex(of: "/") ?? text.endIndex) {
            text = String(text[text.index(after: at)...])
        }
        // scp-like host:path
        if !hadScheme, let colon = text.firstIndex(of: ":") {
            let slash = text.firstIndex(of: "/") ?? text.endIndex
            if colon < slash { text.replaceSubrange(colon...colon, with: "/") }
        }
        while text.hasSuffix("/") { text.removeLast() }
        if text.lowercased().hasSuffix(".git") { text.removeLast(4) }
        if let slash = text.firstIndex(of: "/") {
            var host = text[..<slash].lowercased()
            if let colon = host.firstIndex(of: ":") { host = String(host[..<colon]) }  // drop a port
            text = host + text[slash...]
        } else {
            text = text.lowercased()
        }
        return text
    }
}
