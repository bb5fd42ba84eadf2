import Foundation

/// One place where a roll touches the world: a file-system call on the store, an HTTP exchange
/// with Entra, a PKCS#11 call that changes a token, or the application's reload hook. Every such place is named, so a test can stop the
/// process exactly there (a crash point) or make it fail (a full disk, an I/O error, a lost answer).
///
/// Names are stable across runs: a file is named by its role (`journal.json`, `key.pem`,
/// `cert.pem`, `current.pem`), never by a thumbprint; an HTTP exchange by its operation (`token`,
/// `read`, `addKey`, `removeKey`). Together with how many times the same name was reached before,
/// a name identifies one point of a roll: `rename journal.json#3`.
public struct SideEffect: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// `open(O_CREAT|O_EXCL)` of a temporary file.
        case create
        /// `write` of a file's bytes (or the zeros that shred a key).
        case write
        /// `fsync` of a file.
        case fsync
        /// `rename` of a temporary file over its final name.
        case rename
        /// `unlink` of a file (a destroyed key, a swept leftover, a failed temporary file).
        case unlink
        /// `fsync` of a folder, which makes a rename or unlink durable.
        case syncFolder = "fsync-dir"
        /// An HTTP request is about to be sent.
        case send
        /// The HTTP answer has arrived (the server applied the request) and is not yet read.
        case answered
        /// The reload hook is about to run.
        case hook
        /// A PKCS#11 call that changes the token (`C_GenerateKeyPair`, `C_DestroyObject`) is about to be made.
        case token = "p11"
        /// That PKCS#11 call has returned (the token changed) and its result is not yet used.
        case tokenDone = "p11-done"
    }

    public let kind: Kind
    /// The file's role or the HTTP operation.
    public let target: String

    public init(_ kind: Kind, _ target: String) {
        self.kind = kind
        self.target = target
    }

    public var description: String { "\(kind.rawValue) \(target)" }

    /// Parses `description` back (`"rename journal.json"`).
    public init?(_ text: String) {
        let parts = text.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])) else { return nil }
        self.init(kind, String(parts[1]))
    }

    /// Whether this is a file-system call (where a full disk or an I/O error can strike).
    public var isFileSystem: Bool { ![.send, .answered, .hook, .token, .tokenDone].contains(kind) }

    /// Whether this is a PKCS#11 call that changes the token (where a device error or a full token can strike).
    public var isTokenCall: Bool { kind == .token || kind == .tokenDone }

    /// The role of a file in the store: its name with a leading thumbprint (`<40 hex>.`) and a
    /// temporary suffix removed, so `keys/AB12….key.pem` is `key.pem`.
    public static func role(ofFile path: String) -> String {
        var name = Substring((path as NSString).lastPathComponent)
        if name.hasPrefix("."), let r = name.range(of: ".tmp-") { name = name[name.index(after: name.startIndex)..<r.lowerBound] }
        if let dot = name.firstIndex(of: "."), name.distance(from: name.startIndex, to: dot) == 40,
           name[..<dot].allSatisfy(\.isHexDigit) {
            name = name[name.index(after: dot)...]
        }
        return String(name)
    }
}

/// Called just before every side effect of a roll. In production it does nothing. A test (or the
/// `KEYROLL_TEST_CRASH_AT` variable of the command-line tool) uses it to record the points, to
/// stop the process at one of them, or to make one fail by throwing the error the system call would.
public struct SideEffectHook: Sendable {
    private let body: (@Sendable (SideEffect) throws -> Void)?

    public init(_ body: @escaping @Sendable (SideEffect) throws -> Void) { self.body = body }
    private init() { body = nil }

    /// No hook: side effects just happen.
    public static let none = SideEffectHook()

    /// Whether this is ``none``.
    public var isNone: Bool { body == nil }

    /// Reaches `effect`: throws if the hook wants it to fail (or not to happen at all).
    @inline(__always)
    public func reach(_ effect: SideEffect) throws { try body?(effect) }

    public func reach(_ kind: SideEffect.Kind, file path: String) throws {
        if body != nil { try reach(SideEffect(kind, SideEffect.role(ofFile: path))) }
    }
}
