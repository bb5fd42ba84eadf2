import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import Logging
import Provisioning

struct RebootstrapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebootstrap",
        abstract: "Issue a new bootstrap certificate and bundle for an app past its cliff or whose agent lost its store (privileged, audited).")

    @Option(name: .long, help: "The application's appId, object id, or the name it was provisioned under.")
    var app: String

    @Option(name: .long, help: "Where to write the new bundle (0600).")
    var out: String

    @Option(name: .long, help: "Why (recorded in the audit log).")
    var reason: String

    @Flag(name: .long, help: "Issue even though the app still has a valid certificate.")
    var force = false

    @Option(name: .long, help: "Audit log (JSON lines, appended).")
    var auditLog = "keyroll-audit.log"

    @OptionGroup var identity: ProvisionerOptions

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let (provisioner, transport) = try identity.connect()
        do {
            let (target, bundle) = try await transport.closing {
                let target = try await find(provisioner.graph)
                let who = Environment.current["USER"] ?? Environment.current["LOGNAME"] ?? "unknown"
                return (target, try await Rebootstrap(provisioner: provisioner, auditLogPath: auditLog)
                    .run(application: target, bundlePath: out, force: force, reason: reason, operator: who))
            }
            print("New bootstrap bundle for \(target.displayName ?? target.appId) written to \(out) (keyId \(bundle.bootstrap.keyId ?? "?")); recorded in \(auditLog).")
            print("On the app's host: keyroll import --bundle \(out) --store DIR, then start the agent within 2 days.")
        } catch {
            if let r = error as? Rebootstrap.Refused { throw UserFacingError(r.description) }
            throw error
        }
    }

    func find(_ graph: GraphClient) async throws -> Application {
        if UUID(uuidString: app) != nil {
            if let a = try? await graph.application(appId: app) { return a }
            if let a = try? await graph.application(id: app) { return a }
        }
        for try await a in graph.applications(filter: OData.hasTag(Provisioner.marker(for: app))) { return a }
        throw UserFacingError("No application '\(app)' (tried appId, object id and the keyroll:app:\(app) tag).")
    }
}
