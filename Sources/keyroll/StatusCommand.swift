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

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each identity's active certificate, next roll, time to the cliff and alarm (reads the store only).",
        discussion: "Exit status: 0 all ok, 1 warning, 2 critical, 3 past the cliff.")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions

    @Flag(name: .long, help: "JSON output.")
    var json = false

    func run() async throws {
        let p = try policy.policy()
        let now = Date()
        let statuses = try stores.paths().map { try StoreReader.status(path: $0, policy: p, now: now) }
        if json {
            print(jsonString(statuses))
        } else {
            print(table(["APP", "APP ID", "ACTIVE", "ORIGIN", "KEY STORE", "NOT AFTER", "NEXT ROLL", "TO CLIFF", "ALARM", "ROLL"], statuses.map { s in
                [(s.displayName ?? "-") + (s.replica.map { " @\($0)" } ?? ""), String(s.appId.prefix(8)), String(s.activeThumbprint.prefix(12)), s.activeOrigin.rawValue,
                 Self.keyStoreText(s), shortDate(s.activeNotAfter),
                 shortDate(s.nextRoll), formatDuration(s.timeToCliff), s.alarm.rawValue, s.rollPhase?.rawValue ?? "idle"]
            }))
            for s in statuses {
                let name = s.displayName ?? s.appId
                if let r = s.interruptedRoll {
                    print("\(name): roll interrupted at '\(r.phase.rawValue)' since \(shortDate(r.phaseSince ?? r.startedAt)) UTC (started \(shortDate(r.startedAt)) UTC).")
                    print("  next: \(r.next) — the agent resumes it by itself (or: keyroll roll --store \(s.store)).")
                    if let actBy = r.actBy { print("  act by \(shortDate(actBy)) UTC if it is still not finished: check the agent's log, then keyroll rebootstrap.") }
                }
                if let rep = s.repair {
                    print("\(name): re-registering its active key at '\(rep.phase.rawValue)' since \(shortDate(rep.phaseSince)) UTC (\(rep.reason)); proof by \(rep.prover.prefix(12)). The agent finishes it by itself.")
                }
                if let last = s.lastRepair { print("\(name): last repair \(last)") }
                if let a = s.advice { print("\(name): \(a)") }
            }
        }
        let worst = statuses.map(\.alarm).max() ?? .ok
        if worst != .ok { throw ExitCode(worst == .warning ? 1 : worst == .critical ? 2 : 3) }
    }

    /// `pkcs11`, `file`, or `file→pkcs11` while the bootstrap key (a file) waits for the first roll.
    static func keyStoreText(_ s: IdentityStatus) -> String {
        let store = s.keyStore ?? .file
        guard let active = s.activeKeyStore, active != store else { return store.rawValue }
        return "\(active.rawValue)→\(store.rawValue)"
    }
}
