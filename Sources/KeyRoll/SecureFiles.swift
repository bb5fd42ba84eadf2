import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from the private-file layer. Messages name the path and the fix; never file contents.
public enum SecureFileError: Error, Equatable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case insecurePermissions(path: String, mode: UInt16, expected: UInt16)
    case notADirectory(path: String)

    public var description: String {
        switch self {
        case .io(let path, let op, let code):
            return "\(op) \(path) failed: \(String(cString: strerror(code)))"
        case .insecurePermissions(let path, let mode, let expected):
            return "\(path) has permissions \(String(mode, radix: 8)); group and others must have no access. "
                + "Fix it with: chmod \(String(expected, radix: 8)) '\(path)'"
        case .notADirectory(let path):
            return "\(path) exists and is not a directory"
        }
    }
}

/// Writes and checks files that hold secrets: 0600 files in 0700 folders, replaced atomically
/// (temporary file, fsync, rename, fsync of the folder), so a crash leaves either the old or the
/// new content, never a torn or world-readable file.
public enum SecureFiles {
    /// Creates `path` (and missing parents) with mode 0700, or checks an existing folder is private.
    public static func ensurePrivateDirectory(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw SecureFileError.notADirectory(path: path) }
            try checkPrivate(path, expected: 0o700)
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path, stat(parent, &st) != 0 {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        }
        guard mkdir(path, 0o700) == 0 || errno == EEXIST else { throw SecureFileError.io(path: path, operation: "mkdir", errno: errno) }
        guard chmod(path, 0o700) == 0 else { throw SecureFileError.io(path: path, operation: "chmod", errno: errno) }
    }

    /// Refuses a file or folder that group or others can access.
    public static func checkPrivate(_ path: String, expected: UInt16) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw SecureFileError.io(path: path, operation: "stat", errno: errno) }
        let mode = UInt16(st.st_mode & 0o777)
        if mode & 0o077 != 0 { throw SecureFileError.insecurePermissions(path: path, mode: mode, expected: expected) }
    }

    /// Atomically replaces `path` with `bytes`, mode 0600.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SecureFileError.io(path: tmp, operation: "create", errno: errno) }
        var ok = false
        defer { if !ok { unlink(tmp) } }
        do {
            defer { close(fd) }
            guard fchmod(fd, mode) == 0 else { throw SecureFileError.io(path: tmp, operation: "chmod", errno: errno) }
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { buf in write(fd, buf.baseAddress! + written, bytes.count - written) }
                if n < 0 { if errno == EINTR { continue }; throw SecureFileError.io(path: tmp, operation: "write", errno: errno) }
                written += n
            }
            guard fsync(fd) == 0 else { throw SecureFileError.io(path: tmp, operation: "fsync", errno: errno) }
        }
        guard rename(tmp, path) == 0 else { throw SecureFileError.io(path: path, operation: "rename", errno: errno) }
        ok = true
        try syncDirectory(dir.isEmpty ? "." : dir)
    }

    public static func writeAtomically(_ text: String, to path: String, mode: mode_t = 0o600) throws {
        try writeAtomically(Array(text.utf8), to: path, mode: mode)
    }

    /// Flushes a folder's entries (a rename is durable only after this).
    public static func syncDirectory(_ dir: String) throws {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SecureFileError.io(path: dir, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SecureFileError.io(path: dir, operation: "fsync", errno: errno) }
    }

    /// Overwrites a file's bytes with zeros, syncs, then unlinks it. (On copy-on-write or journaling
    /// file systems this is best effort; it still keeps the key out of casual reach.)
    public static func shred(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            let zeros = [UInt8](repeating: 0, count: Int(st.st_size))
            _ = zeros.withUnsafeBytes { write(fd, $0.baseAddress, zeros.count) }
            fsync(fd)
            close(fd)
        }
        guard unlink(path) == 0 || errno == ENOENT else { throw SecureFileError.io(path: path, operation: "unlink", errno: errno) }
        try syncDirectory((path as NSString).deletingLastPathComponent)
    }

    public static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecureFileError.io(path: path, operation: "read", errno: errno == 0 ? ENOENT : errno)
        }
        return Array(data)
    }
}
