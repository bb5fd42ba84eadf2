/// Prints a CLI error naming what was wrong and what to do, then exits non-zero.
public struct UserFacingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}
