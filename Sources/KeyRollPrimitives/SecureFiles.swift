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
    case symbolicLink(path: String)
    case notARegularFile(path: String)
    case wrongOwner(path: String, owner: UInt32, expected: UInt32)
    case tooLarge(path: String, limit: Int)

    public var description: String {
        switch self {
        case .io(let path, let op, let code):
            return "\(op) \(path) failed: \(String(cString: strerror(code)))"
        case .insecurePermissions(let path, let mode, let expected):
            return "\(path) has permissions \(String(mode, radix: 8)); group and others must have no access. "
                + "Fix it with: chmod \(String(expected, radix: 8)) '\(path)'"
        case .notADirectory(let path):
            return "\(path) exists and is not a directory"
        case .symbolicLink(let path):
            return "\(path) is a symbolic link; KeyRoll never reads, writes or destroys a secret through a link. Replace it with the file itself."
        case .notARegularFile(let path):
            return "\(path) is not a regular file; KeyRoll only keeps secrets in regular files."
        case .wrongOwner(let path, let owner, let expected):
            return "\(path) belongs to user \(owner), not to this user (\(expected)); KeyRoll only trusts secrets it owns. Fix it with: chown \(expected) '\(path)'"
        case .tooLarge(let path, let limit):
            return "\(path) is larger than \(limit) bytes; it cannot be a KeyRoll secret file."
        }
    }
}

/// Writes and checks files that hold secrets: 0600 files in 0700 folders, replaced atomically
/// (temporary file, fsync, rename, fsync of the folder), so a crash leaves either the old or the
/// new content, never a torn or world-readable file.
public enum SecureFiles {
    /// Whether a program may be run as this user (``openTrustedExecutable(_:)`` can open it).
    public static func isTrustedExecutable(_ path: String) -> Bool {
        guard let fd = openTrustedExecutable(path) else { return false }
        close(fd)
        return true
    }

    /// Opens a program that may be run as this user, for `fexecve`, or returns nil. Trusted is a
    /// regular file with an execute bit that root or this user owns and no one else can write, in a
    /// folder root or this user owns and no one else can write, under folders that root or this user
    /// own and that no one else can write unless they are sticky (like `/tmp`, where no one can
    /// rename or replace another user's entry): a program another user could replace, or put in
    /// place by renaming one of its folders, would run with this user's keys. `path` must be
    /// absolute, and no part of it may be a symbolic link or `.`/`..`: a link another user planted
    /// in a sticky folder could name any program of root's.
    ///
    /// The path is walked from `/` one name at a time (`openat` with `O_PATH | O_NOFOLLOW` on the
    /// folder opened before), and each part is judged through its own descriptor, so the chain
    /// judged is the chain walked, and executing the returned descriptor runs the file that was
    /// judged even if a path is changed afterwards. `O_PATH` opens nothing for reading: a FIFO
    /// cannot block the walk and a device is never opened.
    public static func openTrustedExecutable(_ path: String) -> Int32? {
        let names = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard path.hasPrefix("/"), !names.isEmpty, !names.contains("."), !names.contains("..") else { return nil }
        let flags = pathOnly | O_NOFOLLOW | O_CLOEXEC
        var current = open("/", flags | O_DIRECTORY)
        guard current >= 0, judge(current, kind: S_IFDIR, programsFolder: names.count == 1) else {
            if current >= 0 { close(current) }
            return nil
        }
        for (index, name) in names.enumerated() {
            let next = openat(current, name, flags)
            close(current)
            guard next >= 0 else { return nil }
            let isProgram = index == names.count - 1
            guard judge(next, kind: isProgram ? S_IFREG : S_IFDIR, programsFolder: index == names.count - 2) else {
                close(next)
                return nil
            }
            current = next
        }
        return current
    }

    #if os(Linux)
    /// `O_PATH` (Linux's value on x86_64 and aarch64; the Glibc module does not export it): a
    /// descriptor that names a file without opening it for reading, enough for `fstat`, `openat`
    /// and `fexecve`.
    static let pathOnly: Int32 = 0o10000000
    #else
    static let pathOnly: Int32 = O_RDONLY | O_NONBLOCK
    #endif

    /// One part of a trusted program's path, through its descriptor (``openTrustedExecutable(_:)``):
    /// of the expected kind (a symbolic link is neither), owned by root or this user; the program not
    /// writable by group or others and with an execute bit; its own folder not writable by group or
    /// others; a folder above it writable by others only if sticky.
    static func judge(_ fd: Int32, kind: mode_t, programsFolder: Bool) -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == kind, st.st_uid == 0 || st.st_uid == geteuid() else { return false }
        let othersWrite = st.st_mode & 0o022 != 0
        if kind == S_IFREG { return !othersWrite && st.st_mode & 0o111 != 0 }
        return !othersWrite || (!programsFolder && st.st_mode & S_ISVTX != 0)
    }

    /// Creates `path` (and missing parents) with mode 0700, or checks an existing folder is private.
    public static func ensurePrivateDirectory(_ path: String) throws {
        let path = path.isEmpty ? "." : path  // the folder of a bare file name is the current one
        var st = stat()
        if lstat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFLNK { throw SecureFileError.symbolicLink(path: path) }
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

    /// Refuses a file or folder that is a symbolic link, that another user owns, or that group or
    /// others can access.
    public static func checkPrivate(_ path: String, expected: UInt16) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw SecureFileError.io(path: path, operation: "stat", errno: errno) }
        try checkPrivate(st, path: path, expected: expected)
    }

    static func checkPrivate(_ st: stat, path: String, expected: UInt16) throws {
        if (st.st_mode & S_IFMT) == S_IFLNK { throw SecureFileError.symbolicLink(path: path) }
        if st.st_uid != geteuid() { throw SecureFileError.wrongOwner(path: path, owner: st.st_uid, expected: geteuid()) }
        let mode = UInt16(st.st_mode & 0o777)
        if mode & 0o077 != 0 { throw SecureFileError.insecurePermissions(path: path, mode: mode, expected: expected) }
    }

    /// Reads a file without following a symbolic link, only if it is a regular file, at most
    /// `limit` bytes. With `requirePrivate` (a secret: a key, a bundle), also only if this user owns
    /// it and group and others have no access; without it (the journal, a certificate) anyone who
    /// may read it may, so an operator can run `keyroll status` on a store another user owns.
    public static func readSecret(_ path: String, limit: Int = 1 << 20, requirePrivate: Bool = true) throws -> [UInt8] {
        guard let (fd, st) = try openRegularFile(path, O_RDONLY) else { throw SecureFileError.io(path: path, operation: "open", errno: ENOENT) }
        defer { close(fd) }
        if requirePrivate { try checkPrivate(st, path: path, expected: 0o600) }  // owner, then mode
        guard st.st_size <= limit else { throw SecureFileError.tooLarge(path: path, limit: limit) }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var got = 0
        while got < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + got, $0.count - got) }
            if n < 0 { if errno == EINTR { continue }; throw SecureFileError.io(path: path, operation: "read", errno: errno) }
            if n == 0 { break }
            got += n
        }
        return Array(out.prefix(got))
    }

    /// Atomically replaces `path` with `bytes`, mode 0600: a temporary file beside it (created
    /// exclusively, never through a link), written, fsynced, renamed over `path`, and the folder
    /// fsynced. A crash at any point leaves the old content or the new, never a mix; what it can
    /// leave is a `.NAME.tmp-*` file, which ``CredentialStore/sweep(keeping:)`` removes.
    /// Each system call first passes `hook` (see ``SideEffect``).
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600, hook: SideEffectHook = .none) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try hook.reach(.create, file: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw SecureFileError.io(path: tmp, operation: "create", errno: errno) }
        var ok = false
        defer {
            // Cleaning up is a side effect too: a process that died here would leave the file.
            if !ok, (try? hook.reach(.unlink, file: tmp)) != nil { unlink(tmp) }
        }
        do {
            defer { close(fd) }
            guard fchmod(fd, mode) == 0 else { throw SecureFileError.io(path: tmp, operation: "chmod", errno: errno) }
            try hook.reach(.write, file: path)
            try writeAll(fd, bytes, path: tmp)
            try hook.reach(.fsync, file: path)
            guard fsync(fd) == 0 else { throw SecureFileError.io(path: tmp, operation: "fsync", errno: errno) }
        }
        try hook.reach(.rename, file: path)
        guard rename(tmp, path) == 0 else { throw SecureFileError.io(path: path, operation: "rename", errno: errno) }
        ok = true
        try hook.reach(.syncFolder, file: path)
        try syncDirectory(dir.isEmpty ? "." : dir)
    }

    public static func writeAtomically(_ text: String, to path: String, mode: mode_t = 0o600, hook: SideEffectHook = .none) throws {
        try writeAtomically(Array(text.utf8), to: path, mode: mode, hook: hook)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { buf in write(fd, buf.baseAddress! + written, bytes.count - written) }
            if n < 0 { if errno == EINTR { continue }; throw SecureFileError.io(path: path, operation: "write", errno: errno) }
            written += n
        }
    }

    /// Flushes a folder's entries (a rename is durable only after this).
    public static func syncDirectory(_ dir: String) throws {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SecureFileError.io(path: dir, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SecureFileError.io(path: dir, operation: "fsync", errno: errno) }
    }

    /// Destroys a secret file: opens it (never through a symbolic link, and only a regular file),
    /// unlinks the name and makes that durable, then overwrites the still-open bytes with zeros.
    /// The name therefore always holds the whole secret or nothing: a crash can never leave a
    /// zeroed file that reads as damaged. (On copy-on-write or journaling file systems the
    /// overwrite is best effort; it still keeps the key out of casual reach.) A missing file is
    /// already destroyed. A file its owner made read-only (0400, a common hardening) is destroyed
    /// too: a key that cannot be destroyed would stop every sweep, and so every roll.
    public static func shred(_ path: String, hook: SideEffectHook = .none) throws {
        guard let (fd, st) = try openForShredding(path) else { return }
        defer { close(fd) }
        try hook.reach(.unlink, file: path)
        guard unlink(path) == 0 || errno == ENOENT else { throw SecureFileError.io(path: path, operation: "unlink", errno: errno) }
        try hook.reach(.syncFolder, file: path)
        try syncDirectory((path as NSString).deletingLastPathComponent)
        try hook.reach(.write, file: path)
        try writeAll(fd, [UInt8](repeating: 0, count: Int(st.st_size)), path: path)
        try hook.reach(.fsync, file: path)
        _ = fsync(fd)
    }

    /// Opens `path` for writing to shred it. When writing is refused (EACCES), the file is opened for
    /// reading instead and, if it is a regular file this user owns, given back its owner's write
    /// permission through that descriptor and opened again; the second open must reach the same file
    /// (device and inode), so a file swapped in between is refused, never written.
    private static func openForShredding(_ path: String) throws -> (Int32, stat)? {
        do { return try openRegularFile(path, O_WRONLY) } catch SecureFileError.io(_, "open", EACCES) {
            guard let (reader, st) = try openRegularFile(path, O_RDONLY) else { return nil }
            defer { close(reader) }
            guard st.st_uid == geteuid() else { throw SecureFileError.wrongOwner(path: path, owner: st.st_uid, expected: geteuid()) }
            guard fchmod(reader, 0o600) == 0 else { throw SecureFileError.io(path: path, operation: "chmod", errno: errno) }
            guard let (fd, again) = try openRegularFile(path, O_WRONLY) else { return nil }
            guard again.st_dev == st.st_dev, again.st_ino == st.st_ino else {
                close(fd)
                throw SecureFileError.io(path: path, operation: "open", errno: EAGAIN)
            }
            return (fd, again)
        }
    }

    /// Opens `path` without following a link and only if it is a regular file; nil if it does not exist.
    private static func openRegularFile(_ path: String, _ flags: Int32) throws -> (Int32, stat)? {
        let fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 {
            if errno == ENOENT { return nil }
            if errno == ELOOP { throw SecureFileError.symbolicLink(path: path) }
            throw SecureFileError.io(path: path, operation: "open", errno: errno)
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = errno; close(fd); throw SecureFileError.io(path: path, operation: "stat", errno: e) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); throw SecureFileError.notARegularFile(path: path) }
        return (fd, st)
    }

    public static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecureFileError.io(path: path, operation: "read", errno: errno == 0 ? ENOENT : errno)
        }
        return Array(data)
    }
}
