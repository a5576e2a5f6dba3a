import Foundation
@testable import SlipwayCore
import Testing
import Yams

/// The composer on libyaml's events must give exactly the nodes Yams's composer gives (strings, tags, styles,
/// marks), and leave to Yams every document it does not compose the same way.
@Suite("YAML composer")
struct YAMLComposerTests {
    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar):
            return "S(\(scalar.string.debugDescription) \(scalar.tag.rawValue) \(scalar.style.rawValue) \(scalar.mark.map { "\($0)" } ?? "-"))"
        case .sequence(let sequence):
            return "Q(\(sequence.tag.rawValue) \(sequence.style.rawValue) \(sequence.mark.map { "\($0)" } ?? "-") [" + sequence.map(describe).joined(separator: ", ") + "])"
        case .mapping(let mapping):
            return "M(\(mapping.tag.rawValue) \(mapping.style.rawValue) \(mapping.mark.map { "\($0)" } ?? "-") {" + mapping.map { describe($0.key) + ": " + describe($0.value) }.joined(separator: ", ") + "})"
        case .alias:
            return "A"
        }
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/malformed")
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples/shop/slipway.yml")

    static let composed: [String] = [
        "",
        "# only a comment\n",
        "---\n",
        "---\njobs: {}\n...\n",
        "a: 1\nb: [x, 'y', \"z\", {k: v}]\nc:\n  - d\n  - e: f\n    g: ~\n",
        "run: |\n  echo one\n  echo two\nfolded: >\n  a\n  b\n\nkeep: |+\n  x\n\nstrip: |-\n  y\n",
        "plain: a multi\n  line plain\nquoted: \"tab\\tand \\u00e9\"\nsingle: 'it''s'\n",
        "ünïcödé: 日本語 🚀\nafter: [ä, 'ö', \"ü\"]\n",
        "key with: 'colon: inside'\n\"quoted key\": 1\n'single key': 2\n? plain explicit key\n: value\n",
        "- [a, [b, [c]]]\n- {a: {b: {c: d}}}\n- - nested\n  - block\n",
        "empty:\nnull: null\nnum: 010\nbool: yes\n",
        (1...30).map { "k\($0): [v\($0)]\n" }.joined(),
    ]

    static let leftToYams: [String] = [
        "a: &anchor {x: 1}\nb: *anchor\n",
        "base: &b {x: 1}\njob:\n  <<: *b\n",
        "a: !!str 1\n",
        "a: !custom x\n",
        "tagged: !!map {a: b}\n",
        "--- a\n--- b\n",
        "a: 1\na: 2\n",
        "jobs:\n  build: {}\n  build: {}\n",
        "? [complex, key]\n: value\n",
        "a: [unclosed\n",
        "a: b: c\n",
        "\t- tab indented\n",
        "x: ! \"non-specific tag\"\n",
        (1...15).map { "k\($0): v\n" }.joined() + "k3: again\n",
    ]

    func expectSame(_ text: String, _ origin: String) throws {
        let yams = try Yams.compose(yaml: text, .basic)
        guard case .composed(let mine, let nodes) = YAMLComposer.compose(text) else {
            Issue.record("\(origin): not composed")
            return
        }
        #expect(mine.map(Self.describe) == yams.map(Self.describe), "\(origin)")
        var loader = PipelineLoader(file: origin, text: text)
        #expect(yams.map { loader.countNodes($0) ? loader.visitedNodes : -1 } ?? 0 == nodes, "\(origin)")
    }

    @Test("gives Yams's nodes", arguments: composed)
    func sameNodes(_ text: String) throws {
        try expectSame(text, text)
    }

    @Test("gives Yams's nodes for every fixture that Yams composes")
    func sameNodesForTheCorpus() throws {
        var files = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path).filter { $0.hasSuffix(".yml") }.map { Self.fixtures.appendingPathComponent($0) }
        files.append(Self.example)
        var composedCount = 0
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            let refused: Bool
            do { _ = try Yams.compose(yaml: text, .basic); refused = false } catch { refused = true }
            guard !refused else {
                if case .composed = YAMLComposer.compose(text) { Issue.record("\(file.lastPathComponent): composed what Yams refuses") }
                continue
            }
            if case .composed = YAMLComposer.compose(text) {
                composedCount += 1
                try expectSame(text, file.lastPathComponent)
            }
        }
        // Nearly all of the corpus is plain YAML: the comparison must not pass by leaving everything to Yams.
        #expect(composedCount >= files.count - 10, "\(composedCount) of \(files.count)")
    }

    @Test("gives a 1000-job file's nodes as Yams does")
    func wideFile() throws {
        let text = "jobs:\n" + (1...1000).map { "  j\($0): { steps: [ { run: /bin/true } ] }\n" }.joined()
        try expectSame(text, "wide")
    }

    @Test("leaves anchors, tags, several documents, repeated or complex keys and errors to Yams", arguments: leftToYams)
    func unsupported(_ text: String) {
        guard case .unsupported = YAMLComposer.compose(text) else {
            Issue.record("composed \(text.debugDescription)")
            return
        }
    }

    /// Mutated fixtures (bytes replaced, inserted, removed, lines swapped; a fixed seed): the composer never
    /// crashes, and whatever it composes is what Yams composes.
    @Test("agrees with Yams on 3000 mutated files")
    func mutatedFiles() throws {
        struct SplitMix64 { var state: UInt64; mutating func next() -> UInt64 { state &+= 0x9E37_79B9_7F4A_7C15; var z = state; z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9; z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB; return z ^ (z >> 31) } }
        var random = SplitMix64(state: 0x5EED)
        var sources = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path).filter { $0.hasSuffix(".yml") }.sorted()
            .map { try String(contentsOf: Self.fixtures.appendingPathComponent($0), encoding: .utf8) }
        sources += Self.composed
        let alphabet = Array(" \n\t-:,[]{}'\"#&*!|>?%@`~é日0a".utf8)
        var composedCount = 0
        for round in 0..<3000 {
            var bytes = Array(sources[Int(random.next() % UInt64(sources.count))].utf8)
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                switch random.next() % 4 {
                case 0 where !bytes.isEmpty: bytes[position] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: bytes.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: position)
                case 2 where !bytes.isEmpty: bytes.remove(at: position)
                default:
                    var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
                    if lines.count > 2 { lines.swapAt(Int(random.next() % UInt64(lines.count)), Int(random.next() % UInt64(lines.count))) }
                    bytes = Array(lines.joined(separator: [0x0A]))
                }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            guard case .composed(let mine, _) = YAMLComposer.compose(text) else { continue }
            composedCount += 1
            let yams: Node?
            do { yams = try Yams.compose(yaml: text, .basic) } catch {
                Issue.record("round \(round): composed what Yams refuses: \(text.debugDescription)")
                continue
            }
            #expect(mine.map(Self.describe) == yams.map(Self.describe), "round \(round): \(text.debugDescription)")
        }
        #expect(composedCount > 300, "only \(composedCount) of 3000 mutated files composed")
    }

    @Test("a mapping's keys are found by name, small ones in order and large ones by index, the first of a repeated one", arguments: [3, 11, 12, 40])
    func keyedMapping(size: Int) throws {
        var pairs: [(Node, Node)] = (0..<size).map { (Node("k\($0)"), Node("v\($0)")) }
        pairs.append((Node("k0"), Node("again")))
        pairs.append((.sequence(Node.Sequence([Node("not"), Node("a"), Node("string")])), Node("odd")))
        let map = KeyedMapping(Node.Mapping(pairs))
        #expect(map.names.count == size + 2)
        #expect(map.names.last == .some(nil))
        for index in 0..<size { #expect(map["k\(index)"]?.string == "v\(index)") }
        #expect(map["k0"]?.string == "v0")
        #expect(map["missing"] == nil)
        #expect(map.key(at: size).string == "k0")
    }

    @Test("a repeated key still gets the loader's message with both lines")
    func duplicateKeysThroughTheLoader() {
        let result = PipelineLoader.load(text: "jobs:\n  a: { steps: [ { run: x } ] }\n  a: { steps: [ { run: y } ] }\n", file: "dup.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.contains { $0.message.contains("duplicate key 'a'") && $0.location.line == 3 })
    }
}
