import Foundation

/// Any JSON value, for the free-form parts of provenance (parameters, the resolved job).
public indirect enum JSONValue: Sendable, Codable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let n = try? container.decode(Double.self) { self = .number(n) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let a = try? container.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let b): try container.encode(b)
        case .number(let n): try container.encode(n)
        case .string(let s): try container.encode(s)
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }

    /// Parses arbitrary JSON bytes into a value (nil when they are not JSON).
    public static func parse(_ data: Data) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: data) }
}

/// An in-toto Statement v1 whose predicate is SLSA Provenance v1.
public struct ProvenanceStatement: Sendable, Codable, Equatable {
    public static let statementType = "https://in-toto.io/Statement/v1"
    public static let slsaPredicateType = "https://slsa.dev/provenance/v1"
    public static let buildType = "https://slipway.dev/buildtypes/pipeline/v1"
    public static let builderID = "https://slipway.dev/builders/local/v1"

    public struct Subject: Sendable, Codable, Equatable {
        public var name: String
        public var digest: [String: String]
    }

    public struct ResourceDescriptor: Sendable, Codable, Equatable {
        public var name: String?
        public var uri: String?
        public var digest: [String: String]
        public init(name: String? = nil, uri: String? = nil, digest: [String: String]) {
            self.name = name
            self.uri = uri
            self.digest = digest
        }
    }

    public struct Predicate: Sendable, Codable, Equatable {
        public struct BuildDefinition: Sendable, Codable, Equatable {
            public var buildType: String
            public var externalParameters: [String: JSONValue]
            public var internalParameters: [String: JSONValue]
            public var resolvedDependencies: [ResourceDescriptor]
        }

        public struct RunDetails: Sendable, Codable, Equatable {
            public struct Builder: Sendable, Codable, Equatable {
                public var id: String
                public var version: [String: String]
            }

            public struct Metadata: Sendable, Codable, Equatable {
                public var invocationId: String
                public var startedOn: String
                public var finishedOn: String
            }

            public var builder: Builder
            public var metadata: Metadata
            public var byproducts: [ResourceDescriptor]
        }

        public var buildDefinition: BuildDefinition
        public var runDetails: RunDetails
    }

    public var type: String
    public var subject: [Subject]
    public var predicateType: String
    public var predicate: Predicate

    enum CodingKeys: String, CodingKey {
        case type = "_type", subject, predicateType, predicate
    }

    /// What a release records about how it was made.
    public struct Inputs: Sendable {
        public var name: String
        public var version: String
        public var digest: String
        public var pipelineFile: String
        public var pipelineDigest: String
        public var commit: String?
        public var branch: String?
        public var event: String
        public var dirty: Bool
        public var runID: Int64
        public var runNumber: Int64
        public var job: String
        public var jobDefinition: JSONValue
        public var materials: [ResourceDescriptor]
        public var sbomDigest: String?
        public var startedOn: Date
        public var finishedOn: Date
        public var slipwayVersion: String

        public init(name: String, version: String, digest: String, pipelineFile: String, pipelineDigest: String, commit: String?, branch: String?, event: String, dirty: Bool, runID: Int64, runNumber: Int64, job: String, jobDefinition: JSONValue, materials: [ResourceDescriptor], sbomDigest: String?, startedOn: Date, finishedOn: Date, slipwayVersion: String) {
            self.name = name
            self.version = version
            self.digest = digest
            self.pipelineFile = pipelineFile
            self.pipelineDigest = pipelineDigest
            self.commit = commit
            self.branch = branch
            self.event = event
            self.dirty = dirty
            self.runID = runID
            self.runNumber = runNumber
            self.job = job
            self.jobDefinition = jobDefinition
            self.materials = materials
            self.sbomDigest = sbomDigest
            self.startedOn = startedOn
            self.finishedOn = finishedOn
            self.slipwayVersion = slipwayVersion
        }
    }

    public static func subjectName(name: String, version: String) -> String { "\(name)@\(version)" }

    public init(_ inputs: Inputs) {
        let iso = ISO8601DateFormatter()
        var dependencies = inputs.materials
        if let commit = inputs.commit {
            dependencies.insert(ResourceDescriptor(name: "source", uri: "git+commit:\(commit)", digest: ["gitCommit": commit]), at: 0)
        }
        var external: [String: JSONValue] = [
            "pipeline": .object(["path": .string(inputs.pipelineFile), "digest": .object(["sha256": .string(inputs.pipelineDigest)])]),
            "job": .string(inputs.job),
            "event": .string(inputs.event),
            "dirty": .bool(inputs.dirty),
        ]
        if let branch = inputs.branch { external["branch"] = .string(branch) }
        type = Self.statementType
        subject = [Subject(name: Self.subjectName(name: inputs.name, version: inputs.version), digest: ["sha256": inputs.digest])]
        predicateType = Self.slsaPredicateType
        predicate = Predicate(
            buildDefinition: .init(buildType: Self.buildType, externalParameters: external,
                                   internalParameters: ["jobDefinition": inputs.jobDefinition, "run": .object(["id": .number(Double(inputs.runID)), "number": .number(Double(inputs.runNumber))])],
                                   resolvedDependencies: dependencies),
            runDetails: .init(builder: .init(id: Self.builderID, version: ["slipway": inputs.slipwayVersion]),
                              metadata: .init(invocationId: "run/\(inputs.runNumber)/\(inputs.job)", startedOn: iso.string(from: inputs.startedOn), finishedOn: iso.string(from: inputs.finishedOn)),
                              byproducts: inputs.sbomDigest.map { [ResourceDescriptor(name: "sbom.cdx.json", digest: ["sha256": $0])] } ?? []))
    }

    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data()
    }
}
