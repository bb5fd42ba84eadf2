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

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Say what the agent would do next and when. Changes nothing.")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions

    func run() async throws {
        let p = try policy.policy()
        let now = Date()
        for path in try stores.paths() {
            let s = try StoreReader.status(path: path, policy: p, now: now)
            let j = try CredentialStore(path: path).journal()
            print("\(s.displayName ?? s.appId) (\(path)):")
            if let r = j.roll {
                print("  resume the roll in progress at '\(r.phase.rawValue)' (started \(shortDate(r.startedAt)) UTC, reason: \(r.reason))")
            } else if s.nextRoll <= now {
                print("  roll now (\(s.activeOrigin == .bootstrap ? "bootstrap certificate" : "due since \(shortDate(s.nextRoll)) UTC"))")
            } else {
                print("  next roll at \(shortDate(s.nextRoll)) UTC (in \(formatDuration(s.nextRoll.timeIntervalSince(now))))")
            }
            print("  steps of a roll:")
            for (i, step) in IdentityStatus.rollSteps(policy: p).enumerated() { print("    \(i + 1). \(step)") }
            print("  cliff: \(s.cliff.map { shortDate($0) + " UTC" } ?? "none") (\(formatDuration(s.timeToCliff)) away; alarm \(s.alarm.rawValue))")
        }
    }
}
