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

struct RollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roll",
        abstract: "Roll now: new key, addKey, verify, switch, removeKey(old). Resumes an interrupted roll.",
        discussion: "Exit status: 0 rolled, 2 abandoned (the old key stays active), 1 error (progress is kept in the journal).")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions
    @OptionGroup var trust: TrustOptions

    @Flag(name: .long, help: "Only roll when due (otherwise: now).")
    var ifDue = false

    @Flag(name: .long, help: "Print the outcome as JSON.")
    var json = false

    @Option(name: .long, help: "Give up after this many seconds (the journal keeps the progress; the next run resumes).")
    var timeout: Double = 1800

    func run() async throws {
        KeyRollLogHandler.bootstrap()
        let policy = try policy.policy()
        guard timeout > 0 else { throw ValidationError("--timeout must be more than 0 seconds") }
        let transport = try trust.transport()
        let abandoned = try await transport.closing { try await Deadline.run(seconds: timeout, what: "keyroll roll") {
            var abandoned = false
            for path in try stores.paths() {
                let roller = try Roller(store: CredentialStore(path: path, hook: CrashHook.sideEffects()), policy: policy, transport: transport,
                                        afterTransition: CrashHook.fromEnvironment())
                try await roller.reconcile()
                let outcome = ifDue ? try await roller.rollIfDue() : try await roller.roll(reason: "requested")
                switch outcome {
                case .rolled(let t): print(json ? #"{"store":"\#(path)","outcome":"rolled","active":"\#(t)"}"# : "\(path): rolled; active certificate \(t)")
                case .abandoned(let why): abandoned = true; print(json ? #"{"store":"\#(path)","outcome":"abandoned"}"# : "\(path): roll abandoned: \(why)")
                case .notDue(let next): print(json ? #"{"store":"\#(path)","outcome":"notDue","next":"\#(shortDate(next))"}"# : "\(path): not due until \(shortDate(next)) UTC")
                }
            }
            return abandoned
        } }
        if abandoned { throw ExitCode(2) }
    }
}
