import ArgumentParser
import EntraClient
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import Provisioning

struct RetireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retire",
        abstract: "Scale in: remove every key of one replica of an app whose host is gone (privileged, audited).",
        discussion: """
            Removes only the keys whose name carries the replica's marker (CN=…@r3), chosen again from a fresh read before \
            each PATCH, so no sibling's key is touched. Refused while the replica still looks live (it rolled recently: \
            stop its agent first, then --force) or when it holds the app's last valid certificate. `keyroll audit` prints \
            this command for every stale replica. Each run is recorded (intent, then outcome) in the audit log.
            """)

    @OptionGroup var action: AuditedActionOptions

    @Option(name: .long, help: "The replica to retire (r1, r2, …).")
    var replica: String

    @Flag(name: .long, help: "Retire even a replica that still looks live, or the one holding the app's last valid certificate.")
    var force = false

    @OptionGroup var identity: ProvisionerOptions

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let name: ReplicaName
        do { name = try ReplicaName(replica) } catch { throw UserFacingError("--replica: \(error)") }
        let (provisioner, transport) = try identity.connect()
        do {
            let (target, removed) = try await transport.closing {
                let target = try await ApplicationLookup.find(action.app, in: provisioner.graph)
                return (target, try await ReplicaRetirement(provisioner: provisioner, auditLogPath: action.auditLog)
                    .run(application: target, replica: name, force: force, reason: action.reason, operator: action.operatorName))
            }
            print("Retired replica \(name) of \(target.displayName ?? target.appId): removed \(removed.count) key(s) (\(removed.joined(separator: ", "))); recorded in \(action.auditLog).")
            print("Destroy its store on the old host if the host still exists (the keys there no longer sign in).")
        } catch let r as ReplicaRetirement.Refused {
            throw UserFacingError(r.description)
        }
    }
}
