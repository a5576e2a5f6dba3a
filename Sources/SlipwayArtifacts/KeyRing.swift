#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation

/// Ed25519 signing keys under `.slipway/keys/`: `<keyid>.key` (private, mode 0600), `<keyid>.pub`,
/// and `active` naming the key that signs. Rotation adds a key; old public keys stay, so old
/// signatures keep verifying.
public struct KeyRing: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public struct PublicKey: Sendable, Equatable {
        public var id: String
        public var raw: Data
        public var base64: String { raw.base64EncodedString() }
        public var isActive: Bool
    }

    /// Key ids are the first 16 hex digits of SHA-256 over the raw public key.
    public static func keyID(of publicKey: Data) -> String {
        String(SHA256.hash(data: publicKey).hexString.prefix(16))
    }

    var activeFile: String { directory + "/active" }

    public func activeKeyID() -> String? {
        guard let data = FileManager.default.contents(atPath: activeFile) else { return nil }
        let id = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return id.isEmpty ? nil : id
    }

    /// The active signing key, created on first use.
    public func signingKey() throws(ArtifactsError) -> (id: String, key: Curve25519.Signing.PrivateKey) {
        if let id = activeKeyID() {
            guard let data = FileManager.default.contents(atPath: directory + "/\(id).key"),
                  let raw = Data(base64Encoded: String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                  let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
                throw ArtifactsError("the active signing key \(id) is missing or unreadable in \(directory); restore it or run `slipway keys rotate`")
            }
            return (id, key)
        }
        return try rotate()
    }

    /// Makes a new key the active one.
    @discardableResult
    public func rotate() throws(ArtifactsError) -> (id: String, key: Curve25519.Signing.PrivateKey) {
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw ArtifactsError("cannot create \(directory): \(error.localizedDescription)")
        }
        let key = Curve25519.Signing.PrivateKey()
        let id = Self.keyID(of: key.publicKey.rawRepresentation)
        try ArtifactStore.atomicWrite(Data(key.rawRepresentation.base64EncodedString().utf8), to: directory + "/\(id).key", mode: 0o600)
        try ArtifactStore.atomicWrite(Data(key.publicKey.rawRepresentation.base64EncodedString().utf8), to: directory + "/\(id).pub")
        try ArtifactStore.atomicWrite(Data(id.utf8), to: activeFile)
        return (id, key)
    }

    public func publicKey(id: String) -> Curve25519.Signing.PublicKey? {
        guard id.allSatisfy({ $0.isHexDigit }), let data = FileManager.default.contents(atPath: directory + "/\(id).pub"),
              let raw = Data(base64Encoded: String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        return try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
    }

    public func publicKeys() -> [PublicKey] {
        let active = activeKeyID()
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return files.filter { $0.hasSuffix(".pub") }.sorted().compactMap { file in
            let id = String(file.dropLast(4))
            guard let key = publicKey(id: id) else { return nil }
            return PublicKey(id: id, raw: key.rawRepresentation, isActive: id == active)
        }
    }
}

/// DSSE (Dead Simple Signing Envelope) v1: the signature covers PAE(payloadType, payload).
public struct DSSEEnvelope: Sendable, Codable, Equatable {
    public struct Signature: Sendable, Codable, Equatable {
        public var keyid: String
        public var sig: String
    }

    public var payload: String
    public var payloadType: String
    public var signatures: [Signature]

    public static let inTotoPayloadType = "application/vnd.in-toto+json"

    /// Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
    public static func pae(payloadType: String, payload: Data) -> Data {
        var data = Data("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8)
        data.append(payload)
        return data
    }

    public static func sign(payload: Data, payloadType: String, keyID: String, key: Curve25519.Signing.PrivateKey) throws(ArtifactsError) -> DSSEEnvelope {
        let signature: Data
        do { signature = try key.signature(for: pae(payloadType: payloadType, payload: payload)) } catch {
            throw ArtifactsError("signing failed: \(error)")
        }
        return DSSEEnvelope(payload: payload.base64EncodedString(), payloadType: payloadType, signatures: [Signature(keyid: keyID, sig: signature.base64EncodedString())])
    }

    public var payloadData: Data? { Data(base64Encoded: payload) }

    /// Verifies at least one signature with a key from `keys`; returns the key id that verified.
    public func verify(keys: KeyRing) throws(ArtifactsError) -> String {
        guard let body = payloadData else { throw ArtifactsError("the envelope's payload is not valid base64") }
        let message = Self.pae(payloadType: payloadType, payload: body)
        if signatures.isEmpty { throw ArtifactsError("the envelope has no signature") }
        for signature in signatures {
            guard let key = keys.publicKey(id: signature.keyid) else { continue }
            guard let sig = Data(base64Encoded: signature.sig) else { continue }
            if key.isValidSignature(sig, for: message) { return signature.keyid }
        }
        let ids = signatures.map(\.keyid).joined(separator: ", ")
        if signatures.allSatisfy({ keys.publicKey(id: $0.keyid) == nil }) {
            throw ArtifactsError("the envelope is signed by unknown key(s) \(ids); `slipway keys` lists the trusted keys")
        }
        throw ArtifactsError("the signature by key \(ids) does not match the envelope: it was modified after signing")
    }

    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data()
    }
}
