import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives

struct TokenEndpointRotateSecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-secret",
        abstract: "Give this identity a new token-endpoint secret; the old one is still accepted for --overlap-minutes: restart the application with the new environment file meanwhile.",
        discussion: "A secret that leaked must be rotated with --overlap-minutes 0: from then on only the new secret is accepted.")

    @OptionGroup var stores: StoreOptions

    @Option(name: .long, help: "How long the old secret is still accepted, in minutes (0: not at all, for a leaked secret).")
    var overlapMinutes: Int = Int(CredentialStore.defaultTokenEndpointSecretOverlap / 60)

    @Flag(name: .long, help: "Rotate even while the secret the last rotation replaced is still accepted (it is then refused at once: only one previous secret is kept).")
    var force = false

    func run() async throws {
        guard (0...7 * 24 * 60).contains(overlapMinutes) else { throw ValidationError("--overlap-minutes must be from 0 to \(7 * 24 * 60) (a week).") }
        let store = try TokenEndpointOptions.store(stores)
        guard try store.tokenEndpointSettings() != nil else {
            throw UserFacingError("The token endpoint does not serve \(store.path); enable it first: keyroll token-endpoint enable --store \(store.path)")
        }
        let now = Date()
        // Only one previous secret is kept: a second rotation inside the first one's overlap would
        // refuse, at once, the secret an application not yet restarted still sends.
        if overlapMinutes > 0, !force, let previous = try store.tokenEndpointPreviousSecret(), previous.isAccepted(at: now) {
            throw UserFacingError("The secret the last rotation replaced is still accepted until \(UTCTime.iso(previous.acceptedUntil)), and an application not yet restarted may still send it; "
                                  + "rotating again now would refuse it at once (only one previous secret is kept). Restart the applications that use \(store.tokenEndpointEnvironmentPath) and rotate after "
                                  + "\(UTCTime.iso(previous.acceptedUntil)), or pass --force to rotate now anyway. A secret that leaked: --overlap-minutes 0.")
        }
        let rotated = try store.rotateTokenEndpointSecret(overlap: TimeInterval(overlapMinutes) * 60, now: now)
        // keep the environment file the agent wrote in step with the secret (same endpoint URL)
        if let text = try? String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("IDENTITY_ENDPOINT=") }) {
            try store.writeTokenEndpointEnvironment(endpointURL: String(line.dropFirst("IDENTITY_ENDPOINT=".count)))
        }
        print("New secret written to \(store.tokenEndpointSecretPath); \(store.tokenEndpointEnvironmentPath) is updated.")
        if let until = rotated.previousAcceptedUntil {
            print("The old secret is accepted until \(UTCTime.iso(until)): restart the application before then so it loads the new one.")
        } else {
            print("The old secret is refused from now on: restart the application so it loads the new one.")
        }
    }
}
