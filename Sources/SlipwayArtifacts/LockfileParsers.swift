import Foundation
import SlipwayCore

/// Why a lockfile could not be read.
public enum LockfileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file name is not one of the supported lockfiles.
    case unsupported(file: String)
    /// The file is not valid for its format; `reason` says where and why.
    case malformed(file: String, reason: String)

    public var description: String {
        switch self {
        case .unsupported(let file): "\(file): not a supported lockfile"
        case .malformed(let file, let reason): "\(file): \(reason)"
        }
    }
}

/// Finds and parses the lockfiles of a workspace: `Package.resolved` (SwiftPM v1–v3), `requirements*.txt`,
/// `package-lock.json` / `npm-shrinkwrap.json` (lockfileVersion 1–3), `Cargo.lock` and `go.sum`.
public enum LockfileScanner {
    /// Directory names never descended into.
    public static let skippedDirectories: Set<String> = [".git", ".slipway", "node_modules", ".build", "target", "vendor"]

    /// Whether `fileName` (a last path component) is a lockfile this scanner parses.
    public static func isLockfile(_ fileName: String) -> Bool {
        kind(of: fileName) != nil
    }

    /// Finds lockfiles under `root` (skipping .git, .slipway, node_modules, .build, target, vendor) and parses
    /// them; problems are returned, not thrown, and never crash. Components are ordered by lockfile path and
    /// then by name and version; `sourceFile` is the lockfile's path relative to `root`.
    public static func scan(root: String) -> (components: [Component], problems: [String]) {
        var problems: [String] = []
        let rootURL = URL(fileURLWithPath: root, isDirectory: true).standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: rootURL.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return ([], ["\(root): not a directory"])
        }
        var found: [String] = []
        walk(directory: rootURL.path, relative: "", into: &found, problems: &problems)
        var components: [Component] = []
        for relative in found.sorted() {
            let path = rootURL.appendingPathComponent(relative).path
            guard let data = FileManager.default.contents(atPath: path) else {
                problems.append("\(relative): cannot read")
                continue
            }
            do {
                components += try parse(fileName: relative, data: data)
            } catch let error as LockfileError {
                problems.append(error.description)
            } catch {
                problems.append("\(relative): \(error)")
            }
        }
        return (components, problems)
    }

    private static func walk(directory: String, relative: String, into found: inout [String], problems: inout [String]) {
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            problems.append("\(relative.isEmpty ? "." : relative): cannot list directory")
            return
        }
        for entry in entries {
            let path = directory + "/" + entry
            let rel = relative.isEmpty ? entry : relative + "/" + entry
            // lstat: symbolic links are never followed (no cycles, no escaping the workspace).
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                  let type = attributes[.type] as? FileAttributeType else { continue }
            if type == .typeDirectory {
                if skippedDirectories.contains(entry) { continue }
                walk(directory: path, relative: rel, into: &found, problems: &problems)
            } else if type == .typeRegular, isLockfile(entry) {
                found.append(rel)
            }
        }
    }

    private enum Kind { case swiftResolved, requirements, npmLock, cargoLock, goSum }

    private static func kind(of fileName: String) -> Kind? {
        let base = fileName.split(separator: "/").last.map(String.init) ?? fileName
        switch base {
        case "Package.resolved": return .swiftResolved
        case "package-lock.json", "npm-shrinkwrap.json": return .npmLock
        case "Cargo.lock": return .cargoLock
        case "go.sum": return .goSum
        default:
            if base.hasPrefix("requirements"), base.hasSuffix(".txt") { return .requirements }
            return nil
        }
    }

    /// Parses one lockfile, dispatching on the last component of `fileName`, which also becomes each
    /// component's `sourceFile`. Components are unique (by purl) and sorted by name and version.
    public static func parse(fileName: String, data: Data) throws -> [Component] {
        guard let kind = kind(of: fileName) else { throw LockfileError.unsupported(file: fileName) }
        let parsed: [Component]
        switch kind {
        case .swiftResolved: parsed = try SwiftResolvedParser.parse(file: fileName, data: data)
        case .requirements: parsed = try RequirementsParser.parse(file: fileName, text: text(data, file: fileName))
        case .npmLock: parsed = try NPMLockParser.parse(file: fileName, data: data)
        case .cargoLock: parsed = try CargoLockParser.parse(file: fileName, text: text(data, file: fileName))
        case .goSum: parsed = try GoSumParser.parse(file: fileName, text: text(data, file: fileName))
        }
        var seen: [String: Int] = [:]
        var unique: [Component] = []
        for component in parsed {
            if let index = seen[component.purl] {
                // Same package at several places in the tree: keep one, with all the hashes seen.
                unique[index].hashes.merge(component.hashes) { first, _ in first }
            } else {
                seen[component.purl] = unique.count
                unique.append(component)
            }
        }
        return unique.sorted { ($0.name, $0.version, $0.purl) < ($1.name, $1.version, $1.purl) }
    }

    static func text(_ data: Data, file: String) throws -> String {
        guard let text = String(data: data, encoding: .utf8), !text.contains("\u{0}") else {
            throw LockfileError.malformed(file: file, reason: "not UTF-8 text")
        }
        return text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
    }

    static func json(_ data: Data, file: String) throws -> [String: Any] {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw LockfileError.malformed(file: file, reason: "invalid JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw LockfileError.malformed(file: file, reason: "expected a JSON object at the top level")
        }
        return dictionary
    }
}

// MARK: - Package.resolved

enum SwiftResolvedParser {
    static func parse(file: String, data: Data) throws -> [Component] {
        let root = try LockfileScanner.json(data, file: file)
        let pins: [Any]
        if let object = root["object"] as? [String: Any], let list = object["pins"] as? [Any] {
            pins = list  // version 1
        } else if let list = root["pins"] as? [Any] {
            pins = list  // versions 2 and 3
        } else {
            throw LockfileError.malformed(file: file, reason: "no pins (expected `pins` or `object.pins`)")
        }
        var components: [Component] = []
        for (index, item) in pins.enumerated() {
            guard let pin = item as? [String: Any] else {
                throw LockfileError.malformed(file: file, reason: "pin \(index) is not an object")
            }
            guard let state = pin["state"] as? [String: Any] else {
                throw LockfileError.malformed(file: file, reason: "pin \(index) has no state")
            }
            let version = (state["version"] as? String) ?? (state["revision"] as? String)
            guard let version, !version.isEmpty else {
                throw LockfileError.malformed(file: file, reason: "pin \(index) has neither state.version nor state.revision")
            }
            let kind = pin["kind"] as? String
            let name: String
            if kind == "registry" {
                guard let identity = pin["identity"] as? String, !identity.isEmpty else {
                    throw LockfileError.malformed(file: file, reason: "registry pin \(index) has no identity")
                }
                name = identity
            } else {
                guard let location = (pin["location"] as? String) ?? (pin["repositoryURL"] as? String), !location.isEmpty else {
                    throw LockfileError.malformed(file: file, reason: "pin \(index) has no location/repositoryURL")
                }
                // Local checkouts are not published packages: nothing to look up or to list.
                if kind == "localSourceControl" || location.hasPrefix("/") || location.hasPrefix("file:") { continue }
                name = SwiftPackageName.normalize(location)
            }
            components.append(Component(ecosystem: .swift, name: name, version: version, sourceFile: file))
        }
        return components
    }
}

// MARK: - requirements.txt

enum RequirementsParser {
    private static let algorithms = ["sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512", "sha1": "SHA-1", "md5": "MD5"]

    static func parse(file: String, text: String) throws -> [Component] {
        // Join backslash continuations first, as pip does.
        var logical: [String] = []
        var current = ""
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            var line = String(rawLine)
            if line.hasSuffix("\\") {
                line.removeLast()
                current += line + " "
                continue
            }
            logical.append(current + line)
            current = ""
        }
        if !current.isEmpty { logical.append(current) }

        var components: [Component] = []
        for (index, rawLine) in logical.enumerated() {
            var line = stripComment(rawLine).trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("-") { continue }  // -r, -c, -e, --index-url, …
            // Options after the requirement: collect --hash values, drop the rest.
            var hashes: [String: String] = [:]
            if let optionStart = line.range(of: " --") ?? line.range(of: "\t--") {
                let options = line[optionStart.lowerBound...]
                line = String(line[..<optionStart.lowerBound])
                for token in options.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                    guard token.hasPrefix("--hash=") else { continue }
                    let value = token.dropFirst("--hash=".count)
                    guard let colon = value.firstIndex(of: ":") else { continue }
                    let alg = value[..<colon].lowercased()
                    let hex = value[value.index(after: colon)...].lowercased()
                    if let name = algorithms[alg], hashes[name] == nil, isHex(hex) { hashes[name] = hex }
                }
            }
            // Environment markers.
            if let semicolon = line.firstIndex(of: ";") { line = String(line[..<semicolon]) }
            line = line.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard let requirement = pinned(line) else {
                if looksLikeRequirement(line) { continue }  // unpinned (>=, ~=, URL, bare name): not in the SBOM
                throw LockfileError.malformed(file: file, reason: "line \(index + 1): not a requirement: \(String(line.prefix(60)))")
            }
            components.append(Component(ecosystem: .pypi, name: PyPI.normalize(requirement.name), version: requirement.version,
                                        sourceFile: file, hashes: hashes))
        }
        return components
    }

    /// `#` starts a comment at the beginning of a line or after whitespace (a URL fragment `#egg=` is not one).
    private static func stripComment(_ line: String) -> String {
        var previous: Character = " "
        for index in line.indices {
            let ch = line[index]
            if ch == "#", previous == " " || previous == "\t" { return String(line[..<index]) }
            previous = ch
        }
        return line
    }

    private static func isNameCharacter(_ ch: Character) -> Bool {
        ch.isASCII && (ch.isLetter || ch.isNumber || ch == "-" || ch == "_" || ch == ".")
    }

    /// `name[extras] == version` (or `===`); nil for anything that is not an exact pin.
    private static func pinned(_ line: String) -> (name: String, version: String)? {
        var rest = Substring(line)
        let name = rest.prefix(while: isNameCharacter)
        guard let first = name.first, first.isLetter || first.isNumber else { return nil }
        rest = rest.dropFirst(name.count).drop(while: { $0 == " " || $0 == "\t" })
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            rest = rest[rest.index(after: close)...].drop(while: { $0 == " " || $0 == "\t" })
        }
        if rest.hasPrefix("===") {
            rest = rest.dropFirst(3)
        } else if rest.hasPrefix("==") {
            rest = rest.dropFirst(2)
        } else {
            return nil
        }
        let version = rest.trimmingCharacters(in: .whitespaces)
        guard !version.isEmpty, !version.contains(","), !version.contains("*"), !version.contains(" "),
              version.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else { return nil }
        return (String(name), version)
    }

    private static func looksLikeRequirement(_ line: String) -> Bool {
        let name = line.prefix(while: isNameCharacter)
        guard let first = name.first, first.isLetter || first.isNumber else {
            // Direct references: `./local/dir`, `https://…/x.whl`, `git+https://…`.
            return line.hasPrefix(".") || line.hasPrefix("/") || line.contains("://")
        }
        let rest = line.dropFirst(name.count).trimmingCharacters(in: .whitespaces)
        return rest.isEmpty || rest.hasPrefix("[") || rest.hasPrefix("@") || rest.hasPrefix(">") || rest.hasPrefix("<")
            || rest.hasPrefix("~=") || rest.hasPrefix("!=") || rest.hasPrefix("==") || rest.hasPrefix("(")
            || line.contains("://")
    }

    static func isHex<S: StringProtocol>(_ text: S) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }
    }
}

// MARK: - package-lock.json

enum NPMLockParser {
    static func parse(file: String, data: Data) throws -> [Component] {
        let root = try LockfileScanner.json(data, file: file)
        var components: [Component] = []
        if let packages = root["packages"] {
            // lockfileVersion 2 and 3.
            guard let packages = packages as? [String: Any] else {
                throw LockfileError.malformed(file: file, reason: "`packages` is not an object")
            }
            for key in packages.keys.sorted() where !key.isEmpty {
                guard let entry = packages[key] as? [String: Any] else {
                    throw LockfileError.malformed(file: file, reason: "packages[\"\(key)\"] is not an object")
                }
                // Workspace members and links are local, not registry packages.
                guard let range = key.range(of: "node_modules/", options: .backwards) else { continue }
                if entry["link"] as? Bool == true { continue }
                var name = String(key[range.upperBound...])
                if let real = entry["name"] as? String, !real.isEmpty { name = real }  // aliased install
                guard let version = entry["version"] as? String, !version.isEmpty else { continue }
                if let component = make(name: name, version: version, integrity: entry["integrity"] as? String, file: file) {
                    components.append(component)
                }
            }
        } else if let dependencies = root["dependencies"] {
            // lockfileVersion 1: a nested tree.
            guard let dependencies = dependencies as? [String: Any] else {
                throw LockfileError.malformed(file: file, reason: "`dependencies` is not an object")
            }
            try walk(dependencies, path: "dependencies", file: file, into: &components)
        } else if root["lockfileVersion"] == nil {
            throw LockfileError.malformed(file: file, reason: "no lockfileVersion, packages or dependencies")
        }
        return components
    }

    private static func walk(_ dependencies: [String: Any], path: String, file: String, into components: inout [Component]) throws {
        for name in dependencies.keys.sorted() {
            guard let entry = dependencies[name] as? [String: Any] else {
                throw LockfileError.malformed(file: file, reason: "\(path).\(name) is not an object")
            }
            if let version = entry["version"] as? String,
               let component = make(name: name, version: version, integrity: entry["integrity"] as? String, file: file) {
                components.append(component)
            }
            if let nested = entry["dependencies"] {
                guard let nested = nested as? [String: Any] else {
                    throw LockfileError.malformed(file: file, reason: "\(path).\(name).dependencies is not an object")
                }
                try walk(nested, path: "\(path).\(name).dependencies", file: file, into: &components)
            }
        }
    }

    private static func make(name: String, version: String, integrity: String?, file: String) -> Component? {
        var name = name
        var version = version
        // v1 alias: "version": "npm:real-name@1.2.3"
        if version.hasPrefix("npm:") {
            let spec = version.dropFirst(4)
            guard let at = spec.lastIndex(of: "@"), at != spec.startIndex else { return nil }
            name = String(spec[..<at])
            version = String(spec[spec.index(after: at)...])
        }
        // file:, link:, git+…, github:… are not registry versions.
        if version.contains(":") || version.contains("/") || version.isEmpty { return nil }
        return Component(ecosystem: .npm, name: name, version: version, sourceFile: file, hashes: hashes(integrity))
    }

    /// Subresource-integrity strings (`sha512-<base64> sha1-<base64>`) → CycloneDX alg → hex.
    static func hashes(_ integrity: String?) -> [String: String] {
        guard let integrity else { return [:] }
        let names = ["sha512": "SHA-512", "sha384": "SHA-384", "sha256": "SHA-256", "sha1": "SHA-1"]
        var result: [String: String] = [:]
        for token in integrity.split(separator: " ") {
            guard let dash = token.firstIndex(of: "-"), let alg = names[String(token[..<dash]).lowercased()] else { continue }
            var base64 = String(token[token.index(after: dash)...])
            if let question = base64.firstIndex(of: "?") { base64 = String(base64[..<question]) }  // SRI options
            guard let digest = Data(base64Encoded: base64), !digest.isEmpty, result[alg] == nil else { continue }
            result[alg] = digest.hexString
        }
        return result
    }
}

// MARK: - Cargo.lock

enum CargoLockParser {
    /// A line parser for the subset of TOML Cargo writes: `[[package]]` blocks of `key = "string"` lines and
    /// multi-line `dependencies = [ … ]` arrays, plus the v1 `[metadata]` table of checksums.
    static func parse(file: String, text: String) throws -> [Component] {
        struct Package { var name: String?; var version: String?; var source: String?; var checksum: String?; var line: Int }
        var packages: [Package] = []
        var current: Package?
        var table = ""
        var inArray = false
        var metadataChecksums: [String: String] = [:]  // "name version (source)" → checksum

        func finish() throws {
            if let package = current {
                guard package.name != nil, package.version != nil else {
                    throw LockfileError.malformed(file: file, reason: "line \(package.line): [[package]] without name or version")
                }
                packages.append(package)
            }
            current = nil
        }

        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        for (offset, raw) in lines.enumerated() {
            let number = offset + 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if inArray {
                if line.hasPrefix("]") { inArray = false }
                continue
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                try finish()
                guard line.hasSuffix("]") else {
                    throw LockfileError.malformed(file: file, reason: "line \(number): unterminated table header")
                }
                table = line
                if table == "[[package]]" { current = Package(line: number) }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw LockfileError.malformed(file: file, reason: "line \(number): expected `key = value`")
            }
            var key = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("[") {
                if !value.hasSuffix("]") { inArray = true }
                continue
            }
            if key.hasPrefix("\""), key.hasSuffix("\""), key.count >= 2 { key = String(key.dropFirst().dropLast()) }
            guard let string = unquote(value) else {
                // Numbers (`version = 3`), booleans, inline tables: not needed.
                if value.isEmpty || value.hasPrefix("\"") {
                    throw LockfileError.malformed(file: file, reason: "line \(number): bad value for \(key)")
                }
                continue
            }
            if table == "[[package]]" {
                switch key {
                case "name": current?.name = string
                case "version": current?.version = string
                case "source": current?.source = string
                case "checksum": current?.checksum = string
                default: break
                }
            } else if table == "[metadata]", key.hasPrefix("checksum ") {
                metadataChecksums[String(key.dropFirst("checksum ".count))] = string
            }
        }
        if inArray { throw LockfileError.malformed(file: file, reason: "unterminated array at end of file") }
        try finish()

        var components: [Component] = []
        for package in packages {
            guard let name = package.name, let version = package.version, let source = package.source else { continue }  // path / workspace crates
            var hashes: [String: String] = [:]
            let checksum = package.checksum ?? metadataChecksums["\(name) \(version) (\(source))"]
            if let checksum, checksum.count == 64, RequirementsParser.isHex(checksum) { hashes["SHA-256"] = checksum.lowercased() }
            components.append(Component(ecosystem: .cargo, name: name, version: version, sourceFile: file, hashes: hashes))
        }
        return components
    }

    /// A TOML basic string (`"…"`, with the common escapes) or literal string (`'…'`), else nil.
    private static func unquote(_ value: String) -> String? {
        if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") { return String(value.dropFirst().dropLast()) }
        guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return nil }
        var out = ""
        var escaped = false
        for ch in value.dropFirst().dropLast() {
            if escaped {
                switch ch {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(ch)
                }
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else {
                out.append(ch)
            }
        }
        return escaped ? nil : out
    }
}

// MARK: - go.sum

enum GoSumParser {
    /// `module version h1:hash` lines; the `/go.mod` lines only pin a module's go.mod file, not its code.
    /// The `h1:` hash is a hash of a file list (dirhash), not of one file, so it is not reported as a CycloneDX hash.
    static func parse(file: String, text: String) throws -> [Component] {
        var components: [Component] = []
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        for (offset, raw) in lines.enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("//") { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 3, fields[2].contains(":"), fields[1].first == "v" else {
                throw LockfileError.malformed(file: file, reason: "line \(offset + 1): expected `module version hash`")
            }
            if fields[1].hasSuffix("/go.mod") { continue }
            components.append(Component(ecosystem: .go, name: String(fields[0]), version: String(fields[1]), sourceFile: file))
        }
        return components
    }
}
