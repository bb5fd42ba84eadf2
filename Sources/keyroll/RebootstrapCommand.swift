import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import Logging
import KeyRollPrimitives
import Provisioning

struct RebootstrapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebootstrap",
        abstract: "Issue a new bootstrap certificate and bundle for an app past its cliff or whose agent lost its store (privileged, audited).")

    @OptionGroup var action: AuditedActionOptions

    @Option(name: .long, help: "Where to write the new bundle (0600).")
    var out: String

    @Option(name: .long, help: "For an app on several hosts: the replica (r1, r2, …) whose host needs a new bundle.")
    var replica: String?

    @Flag(name: .long, help: "Issue even though the app still has a valid certificate.")
    var force = false

    @OptionGroup var identity: ProvisionerOptions

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let replicaName: ReplicaName?
        do { replicaName = try replica.map(ReplicaName.init) } catch { throw UserFacingError("--replica: \(error)") }
        let (provisioner, transport) = try identity.connect()
        do {
            let (target, bundle) = try await transport.closing {
                let target = try await ApplicationLookup.find(action.app, in: provisioner.graph)
                return (target, try await Rebootstrap(provisioner: provisioner, auditLogPath: action.auditLog)
                    .run(application: target, bundlePath: out, replica: replicaName, force: force, reason: action.reason, operator: action.operatorName))
            }
            print("New bootstrap bundle for \(target.displayName ?? target.appId) written to \(out) (keyId \(bundle.bootstrap.keyId ?? "?")); recorded in \(action.auditLog).")
            print("On the app's host: keyroll import --bundle \(out) --store DIR, then start the agent within 2 days.")
        } catch {
            if let r = error as? Rebootstrap.Refused { throw UserFacingError(r.description) }
            throw error
        }
    }
}
