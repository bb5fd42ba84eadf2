import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import Hummingbird
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import ServiceLifecycle

/// Test hooks, read from the environment (never set in production):
/// - `KEYROLL_TEST_CRASH_AFTER=<phase>` SIGKILLs the process right after that transition is durable;
/// - `KEYROLL_TEST_CRASH_AT=<side effect>#<n>` SIGKILLs it just before the n-th time it reaches that
///   side effect (`rename journal.json#3`, `answered addKey#1`; see ``SideEffect``);
/// - `KEYROLL_TEST_STOP_AT=<side effect>#<n>` stops the process with SIGSTOP there instead (a
///   paused process: the test decides when it goes on, with SIGCONT);
/// - `KEYROLL_TEST_HOOK_ONCE=<file>`: the crash or stop happens only in the first process to create
///   that file (a lean agent's later passes, which inherit the variables, run on);
/// - `KEYROLL_TEST_SIDE_EFFECT_LOG=<file>` appends the name of every side effect reached to a file,
///   so a test can enumerate them.
enum CrashHook {
    static func fromEnvironment() -> (@Sendable (RollPhase?) -> Void)? {
        guard let target = ProcessInfo.processInfo.environment["KEYROLL_TEST_CRASH_AFTER"], !target.isEmpty else { return nil }
        return { phase in if phase?.rawValue == target || (phase == nil && target == "finished") { kill(getpid(), SIGKILL) } }
    }

    static func sideEffects() -> SideEffectHook {
        let env = ProcessInfo.processInfo.environment
        let target = env["KEYROLL_TEST_CRASH_AT"].flatMap { $0.isEmpty ? nil : $0 }
        let logPath = env["KEYROLL_TEST_SIDE_EFFECT_LOG"].flatMap { $0.isEmpty ? nil : $0 }
        let stopAt = env["KEYROLL_TEST_STOP_AT"].flatMap { $0.isEmpty ? nil : $0 }
        guard target != nil || logPath != nil || stopAt != nil else { return .none }
        let counts = Counts()
        let logFD: Int32 = logPath.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600) } ?? -1
        return SideEffectHook { effect in
            let n = counts.next(effect.description)
            if logFD >= 0 {
                let line = Array("\(effect)#\(n)\n".utf8)
                _ = line.withUnsafeBytes { write(logFD, $0.baseAddress, line.count) }
            }
            if let target, target == "\(effect)#\(n)", firstTime() { kill(getpid(), SIGKILL) }
            if let stopAt, stopAt == "\(effect)#\(n)", firstTime() { kill(getpid(), SIGSTOP) }
        }
    }

    /// False when `KEYROLL_TEST_HOOK_ONCE` names a file another process already created.
    static func firstTime() -> Bool {
        guard let path = ProcessInfo.processInfo.environment["KEYROLL_TEST_HOOK_ONCE"], !path.isEmpty else { return true }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    final class Counts: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [String: Int] = [:]
        func next(_ name: String) -> Int { lock.withLock { seen[name, default: 0] += 1; return seen[name]! } }
    }
}
