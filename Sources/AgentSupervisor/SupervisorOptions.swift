/// What `keyroll agent --lean` hands the supervisor it becomes (`exec`): where the passes leave
/// their answers, where to serve them, how long a pass may run, and the pass's own command line.
///
/// The command line is fixed and written by `keyroll` itself, never by a user:
/// `keyroll-supervisor --state DIR [--metrics-host H] [--metrics-port P] [--pass-deadline S] [--retry-seconds S] -- CHILD...`.
public struct SupervisorOptions: Equatable, Sendable {
    /// A private (0700) folder: the passes write `metrics.http`, `healthz.http`, `readyz.http` and
    /// `next-pass` there.
    public var stateDirectory: String
    public var metricsHost = "127.0.0.1"
    /// -1: no server.
    public var metricsPort = -1
    /// A pass whose heartbeat has not changed for this long is stopped (SIGTERM, then SIGKILL 10 s
    /// later) and counted as failed: every step of a roll is crash-safe, so the next pass resumes it.
    public var passDeadlineSeconds = 300
    /// The wait after a failed pass; it doubles with each failure in a row, up to an hour.
    public var retrySeconds = 60
    /// The pass: an absolute executable path and its arguments.
    public var child: [String]

    public init(stateDirectory: String, metricsHost: String = "127.0.0.1", metricsPort: Int = -1, passDeadlineSeconds: Int = 300, retrySeconds: Int = 60, child: [String]) {
        self.stateDirectory = stateDirectory
        self.metricsHost = metricsHost
        self.metricsPort = metricsPort
        self.passDeadlineSeconds = passDeadlineSeconds
        self.retrySeconds = retrySeconds
        self.child = child
    }

    /// The arguments after the program name.
    public static func parse(_ arguments: [String]) throws(SupervisorError) -> SupervisorOptions {
        var state: String?, host = "127.0.0.1", port = -1, deadline = 300, retry = 60
        var i = 0
        func value(_ name: String) throws(SupervisorError) -> String {
            guard i + 1 < arguments.count else { throw .usage("\(name) needs a value") }
            i += 1
            return arguments[i]
        }
        while i < arguments.count {
            let a = arguments[i]
            switch a {
            case "--state": state = try value(a)
            case "--metrics-host": host = try value(a)
            case "--metrics-port":
                guard let p = Int(try value(a)), (-1...65_535).contains(p) else { throw .usage("--metrics-port takes -1 (none), 0 (any) or a port up to 65535") }
                port = p
            case "--pass-deadline":
                guard let s = Int(try value(a)), (10...86_400).contains(s) else { throw .usage("--pass-deadline takes seconds from 10 to 86400") }
                deadline = s
            case "--retry-seconds":
                guard let s = Int(try value(a)), (1...3600).contains(s) else { throw .usage("--retry-seconds takes seconds from 1 to 3600") }
                retry = s
            case "--":
                let child = Array(arguments[(i + 1)...])
                guard let program = child.first, program.hasPrefix("/") else { throw .usage("the pass after -- must start with an absolute path") }
                guard let state, state.hasPrefix("/") else { throw .usage("--state takes an absolute folder") }
                return SupervisorOptions(stateDirectory: state, metricsHost: host, metricsPort: port, passDeadlineSeconds: deadline, retrySeconds: retry, child: child)
            default:
                throw .usage("unknown argument '\(a.prefix(100))'")
            }
            i += 1
        }
        throw .usage("no pass given (-- CHILD...)")
    }
}

public enum SupervisorError: Error, Equatable, CustomStringConvertible {
    case usage(String)
    case system(String, errno: Int32)

    public var description: String {
        switch self {
        case .usage(let s):
            return "keyroll-supervisor: \(s). It is started by `keyroll agent --lean`, not by hand: run that instead (keyroll agent --help)."
        case .system(let what, let e):
            return "keyroll-supervisor: \(what): \(String(cString: strerror(e)))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
