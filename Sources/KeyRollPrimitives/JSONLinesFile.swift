import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An append-only JSON-lines file (mode 0600): the provisioner's run log and audit trail.
///
/// Rules it keeps: each line is handed to the kernel in one `write(2)` on an `O_APPEND` descriptor
/// and is fsynced before `append` returns, so a line that was reported written survives a crash;
/// a line torn by a crash is closed with a newline before the next one is added, so it can never
/// swallow the next line; readers skip a line that does not parse. Every write passes `hook`
/// (see ``SideEffect``), named by the file's role.
public final class JSONLinesFile: @unchecked Sendable {
    public let path: String
    private let hook: SideEffectHook
    private let lock = NSLock()
    private var fd: Int32 = -1

    /// Opens `path` for appending, creating it (and its folder) if needed.
    public init(path: String, hook: SideEffectHook = .none) throws {
        self.path = path
        self.hook = hook
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try hook.reach(.create, file: path)
        fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SecureFileError.io(path: path, operation: "open", errno: errno) }
        if Self.endsTorn(fd) { try write([UInt8(ascii: "\n")]) }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The lines already in the file at `path` (none if it does not exist), torn ones included.
    public static func lines(at path: String) -> [ArraySlice<UInt8>] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return Array(data).split(separator: UInt8(ascii: "\n"))
    }

    /// Appends `line` (one JSON document, no newline) and fsyncs it.
    public func append(_ line: [UInt8]) throws {
        try lock.withLock { try write(line + [UInt8(ascii: "\n")]) }
    }

    /// Appends one line to the file at `path`, opening and closing it.
    public static func append(_ line: [UInt8], to path: String, hook: SideEffectHook = .none) throws {
        try JSONLinesFile(path: path, hook: hook).append(line)
    }

    private func write(_ bytes: [UInt8]) throws {
        try hook.reach(.write, file: path)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, bytes.count) }
        guard n == bytes.count else { throw SecureFileError.io(path: path, operation: "append", errno: n < 0 ? errno : EIO) }
        try hook.reach(.fsync, file: path)
        guard fsync(fd) == 0 else { throw SecureFileError.io(path: path, operation: "fsync", errno: errno) }
    }

    /// Whether the file's last byte is not a newline (a crash tore its last line).
    private static func endsTorn(_ fd: Int32) -> Bool {
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return false }
        var last: UInt8 = 0
        return pread(fd, &last, 1, size - 1) == 1 && last != UInt8(ascii: "\n")
    }
}
