/// The artifacts module's error: what went wrong and what to do about it.
public struct ArtifactsError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
