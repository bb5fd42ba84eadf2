#if canImport(Glibc)
import Glibc
#endif

/// Starts a program the way a shell or systemd would: no signal blocked, and the signals a KeyRoll
/// process handles or ignores (TERM, INT, HUP, CHLD, PIPE) back at their default action. A child
/// inherits its parent's mask and ignored signals otherwise, and a program that waits on a signal
/// (a pass stopped by SIGTERM, `openssl speed` timing itself with SIGALRM) would never see it.
///
/// Used by the supervisor for each pass, and by `keyroll-lab bench footprint` to time starts.
public enum CleanSpawn {
    /// `posix_spawn` failed: its error number.
    public struct Failure: Error, CustomStringConvertible {
        public let code: Int32
        public var description: String { String(cString: strerror(code)) }
    }

    /// Starts `argv` (`argv[0]` is the program's path) and returns its pid. `ownProcessGroup` puts it
    /// in a new process group (a signal to the group reaches what it starts too); `quiet` sends its
    /// standard output and error to /dev/null.
    public static func start(_ argv: [String], ownProcessGroup: Bool = false, quiet: Bool = false) throws(Failure) -> pid_t {
        var attributes = posix_spawnattr_t()
        var actions = posix_spawn_file_actions_t()
        guard posix_spawnattr_init(&attributes) == 0 else { throw Failure(code: ENOMEM) }
        defer { posix_spawnattr_destroy(&attributes) }
        guard posix_spawn_file_actions_init(&actions) == 0 else { throw Failure(code: ENOMEM) }
        defer { posix_spawn_file_actions_destroy(&actions) }
        if quiet {
            for fd in [Int32(1), 2] where posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0) != 0 {
                throw Failure(code: ENOMEM)
            }
        }
        var none = sigset_t(), defaults = sigset_t()
        sigemptyset(&none)
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if ownProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))
        var args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in args { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, &args, environ)
        guard rc == 0 else { throw Failure(code: rc) }
        return pid
    }
}
