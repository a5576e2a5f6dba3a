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
        enum Open {
            case sequence([Node], Mark)
            case mapping([(Node, Node)], key: Node?, keys: Set<String>, Mark)
        }

        var open: [Open] = []
        var root: Node?
        var nodes = 0
        var documents = 0

        // Made once: `Constructor.default` builds its tables anew on every use.
        let resolver = Resolver.basic
        let constructor = Constructor.default

        func tag(_ name: Tag.Name) -> Tag { Tag(name, resolver, constructor) }

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
                let isKey = if case .mapping(_, key: nil, keys: _, _)? = open.last { true } else { false }
                return add(.scalar(Node.Scalar(value, tag(scalar.quoted_implicit == 1 || isKey ? .str : .implicit), style, Self.mark(event))))
            case YAML_SEQUENCE_START_EVENT:
                let start = event.data.sequence_start
                guard start.anchor == nil, start.implicit != 0 || start.tag == nil else { return .unsupported }
                open.append(.sequence([], Self.mark(event)))
                return .more
            case YAML_MAPPING_START_EVENT:
                let start = event.data.mapping_start
                guard start.anchor == nil, start.implicit != 0 || start.tag == nil else { return .unsupported }
                open.append(.mapping([], key: nil, keys: [], Self.mark(event)))
                return .more
            case YAML_SEQUENCE_END_EVENT:
                guard case .sequence(let items, let mark)? = open.popLast() else { return .unsupported }
                return add(.sequence(Node.Sequence(items, tag(.implicit), .any, mark)))
            case YAML_MAPPING_END_EVENT:
                guard case .mapping(let pairs, key: nil, keys: _, let mark)? = open.popLast() else { return .unsupported }
                return add(.mapping(Node.Mapping(pairs, tag(.implicit), .any, mark)))
            default:  // aliases
                return .unsupported
            }
        }

        /// Puts a finished node into the collection it belongs to, or makes it the root.
        mutating func add(_ node: Node) -> Step {
            nodes += 1
            guard let last = open.indices.last else {
                root = node
                return .more
            }
            switch open[last] {
            case .sequence(var items, let mark):
                open[last] = .sequence([], mark)  // keeps `items` uniquely referenced while it grows
                items.append(node)
                open[last] = .sequence(items, mark)
            case .mapping(var pairs, let key, var keys, let mark):
                open[last] = .mapping([], key: nil, keys: [], mark)
                if let key {
                    pairs.append((key, node))
                    open[last] = .mapping(pairs, key: nil, keys: keys, mark)
                } else {
                    // Keys other than scalars, and a key seen before (Yams decides with tags whether it repeats),
                    // are left to Yams.
                    guard let string = node.scalar?.string, keys.insert(string).inserted else { return .unsupported }
                    open[last] = .mapping(pairs, key: node, keys: keys, mark)
                }
            }
            return .more
        }
    }
}
