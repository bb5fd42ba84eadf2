import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the application is told after a switch: run a command or signal a process.
///
/// The hook runs after the new credential is published and before the old key is removed from
/// Entra, and the journal records that it succeeded; a crash before that record runs it again on
/// resume, so a hook may run more than once for one switch and must be idempotent (reloading a
/// certificate is).
public enum ReloadHook: Sendable, Equatable, Codable {
    case command([String])
    case signal(pid: Int32, signal: Int32)

    /// Why the hook did not succeed.
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Runs the hook without blocking a thread of Swift's cooperative pool: a command is waited for
    /// by its termination handler, and killed (SIGKILL) when it outlives `timeout`.
    /// Marks every descriptor above stderr close-on-exec (Foundation's `Process` passes all open
    /// descriptors to the child otherwise).
    static func closeDescriptorsOnExec() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for name in names {
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0, flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    public func run(certificatePath: String, appId: String, timeout: TimeInterval) async throws {
        switch self {
        case .signal(let pid, let sig):
            if kill(pid, sig) != 0 { throw Failure(description: "kill(\(pid), \(sig)) failed: \(String(cString: strerror(errno)))") }
        case .command(let argv):
            guard let program = argv.first else { return }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
            p.arguments = program.hasPrefix("/") ? Array(argv.dropFirst()) : argv
            var env = ProcessInfo.processInfo.environment
            env["KEYROLL_PKCS11_PIN"] = nil  // a token's PIN is the agent's, never the hook's
            env["KEYROLL_CERTIFICATE_PATH"] = certificatePath
            env["KEYROLL_APP_ID"] = appId
            p.environment = env
            p.standardInput = FileHandle.nullDevice
            // the hook inherits no descriptor of the agent's (sockets to Entra, token-endpoint
            // connections that carry secrets, the listening socket)
            Self.closeDescriptorsOnExec()
            let status: Int32 = try await withCheckedThrowingContinuation { cont in
                let once = ResumeOnce(cont)
                p.terminationHandler = { once.resume(.success($0.terminationStatus)) }
                do { try p.run() } catch {
                    once.resume(.failure(Failure(description: "\(program) could not be started: \(error)")))
                    return
                }
                let pid = p.processIdentifier
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                    if once.resume(.failure(Failure(description: "\(program) did not finish within \(Int(timeout)) s and was killed"))) {
                        kill(pid, SIGKILL)
                    }
                }
            }
            if status != 0 { throw Failure(description: "\(program) exited with status \(status)") }
        }
    }
}

/// Resumes a continuation exactly once, from whichever of several callbacks comes first.
final class ResumeOnce<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Error>?

    init(_ c: CheckedContinuation<T, Error>) { continuation = c }

    /// True if this call resumed it.
    @discardableResult
    func resume(_ result: Result<T, Error>) -> Bool {
        guard let c = lock.withLock({ () -> CheckedContinuation<T, Error>? in defer { continuation = nil }; return continuation }) else { return false }
        c.resume(with: result)
        return true
    }
}
