import CYaml
import Yams

/// Composes a YAML document into Yams's nodes straight from libyaml's events, for documents as pipeline
/// files usually are: one document, no anchors, aliases or explicit tags, no repeated keys. Yams's own
/// composer spends most of its time around libyaml (an object per event, Foundation's string decoding, a
/// hashed grouping of every mapping's keys): a third of loading a 1000-job file. Anything else is
/// `.unsupported`, for Yams to compose (or to report in its words).
enum YAMLComposer {
    enum Outcome {
        /// The document's root, nil for an empty stream (as `Yams.compose` gives), and how many nodes it has
        /// (without aliases, no node is counted twice).
        case composed(Node?, nodes: Int)
        case unsupported
    }

    /// Nodes as `Yams.compose(yaml: text, .basic)` makes them: the same marks, styles and tags (mapping keys
    /// and scalars quoted without a tag are `str`, everything else implicit; collections' styles are `.any`,
    /// as Yams reads them from the end event).
    static func compose(_ text: String) -> Outcome {
        guard Builder.marksAreRaw else { return .unsupported }
        var text = text
        return text.withUTF8 { buffer -> Outcome in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else { return .unsupported }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var builder = Builder()
            var event = yaml_event_t()
            while true {
                guard yaml_parser_parse(&parser, &event) == 1 else { return .unsupported }
                defer { yaml_event_delete(&event) }
                switch builder.take(event) {
                case .more: continue
                case .done: return .composed(builder.root, nodes: builder.nodes)
                case .unsupported: return .unsupported
                }
            }
        }
    }

    private struct Builder {
        enum Step { case more, done, unsupported }
        /// A collection being composed, changed in place as its nodes come.
        final class Open {
            let isMapping: Bool
            let mark: Mark
            var items: [Node] = []
            var pairs: [(Node, Node)] = []
            /// A mapping's key waiting for its value.
            var key: Node?
            /// A mapping's keys so far: searched in order while few, hashed once many.
            var names: [String] = []
            var nameSet: Set<String>?

            init(isMapping: Bool, mark: Mark) {
                self.isMapping = isMapping
                self.mark = mark
            }

            /// False when `name` is a key of the mapping already.
            func insert(_ name: String) -> Bool {
                if nameSet == nil {
                    if names.contains(name) { return false }
                    names.append(name)
                    if names.count >= 12 { nameSet = Set(names) }
                    return true
                }
                return nameSet!.insert(name).inserted
            }
        }

        var open: [Open] = []
        var root: Node?
        var nodes = 0
        var documents = 0

        // Made once: `Constructor.default` builds its tables anew on every use.
        let resolver = Resolver.basic
        let constructor = Constructor.default

        /// One `str` tag for all keys and quoted scalars: Yams changes a tag in place only while it is implicit
        /// (when a node is compared or hashed), so a `str` tag can be shared; implicit ones cannot.
        let str: Tag

        init() {
            str = Tag(.str, resolver, constructor)
        }

        /// A field at a time: a method call on the whole builder from its mutating `take` copied all of it.
        mutating func tag(_ name: Tag.Name) -> Tag { name == .str ? str : Tag(name, resolver, constructor) }

        /// Yams makes marks only itself (`Mark` has no public initializer); it is two `Int`s, line then
        /// column, which `compose` checks before anything is made this way.
        struct RawMark { var line: Int; var column: Int }
        static let marksAreRaw = MemoryLayout<Mark>.size == MemoryLayout<RawMark>.size && MemoryLayout<Mark>.alignment == MemoryLayout<RawMark>.alignment

        static func mark(_ event: yaml_event_t) -> Mark {
            unsafeBitCast(RawMark(line: event.start_mark.line + 1, column: event.start_mark.column + 1), to: Mark.self)
        }

        mutating func take(_ event: yaml_event_t) -> Step {
            switch event.type {
            case YAML_STREAM_START_EVENT, YAML_DOCUMENT_END_EVENT:
                return .more
            case YAML_DOCUMENT_START_EVENT:
                documents += 1
                return documents == 1 ? .more : .unsupported
            case YAML_STREAM_END_EVENT:
                return .done
            case YAML_SCALAR_EVENT:
                let scalar = event.data.scalar
                guard scalar.anchor == nil, scalar.tag == nil || scalar.quoted_implicit == 1,
                      let style = Node.Scalar.Style(rawValue: numericCast(scalar.style.rawValue)) else { return .unsupported }
                let value = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
                // Yams resolves every mapping key's tag as it looks for repeated keys (`str` with the basic resolver).
                let isKey = open.last.map { $0.isMapping && $0.key == nil } ?? false
                // Made before `add`: a read of self inside a mutating call's arguments copies the whole builder.
                let node = Node.scalar(Node.Scalar(value, tag(scalar.quoted_implicit == 1 || isKey ? .str : .implicit), style, Self.mark(event)))
                return add(node)
            case YAML_SEQUENCE_START_EVENT:
                let start = event.data.sequence_start
                guard start.anchor == nil, start.implicit != 0 || start.tag == nil else { return .unsupported }
                open.append(Open(isMapping: false, mark: Self.mark(event)))
                return .more
            case YAML_MAPPING_START_EVENT:
                let start = event.data.mapping_start
                guard start.anchor == nil, start.implicit != 0 || start.tag == nil else { return .unsupported }
                open.append(Open(isMapping: true, mark: Self.mark(event)))
                return .more
            case YAML_SEQUENCE_END_EVENT:
                guard let done = open.popLast(), !done.isMapping else { return .unsupported }
                let node = Node.sequence(Node.Sequence(done.items, tag(.implicit), .any, done.mark))
                return add(node)
            case YAML_MAPPING_END_EVENT:
                guard let done = open.popLast(), done.isMapping, done.key == nil else { return .unsupported }
                let node = Node.mapping(Node.Mapping(done.pairs, tag(.implicit), .any, done.mark))
                return add(node)
            default:  // aliases
                return .unsupported
            }
        }

        /// Puts a finished node into the collection it belongs to, or makes it the root.
        mutating func add(_ node: Node) -> Step {
            nodes += 1
            guard let last = open.last else {
                root = node
                return .more
            }
            if !last.isMapping {
                last.items.append(node)
            } else if let key = last.key {
                last.pairs.append((key, node))
                last.key = nil
            } else {
                // Keys other than scalars, and a key seen before (Yams decides with tags whether it repeats),
                // are left to Yams.
                guard let string = node.scalar?.string, last.insert(string) else { return .unsupported }
                last.key = node
            }
            return .more
        }
    }
}
