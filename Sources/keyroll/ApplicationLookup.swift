import ArgumentParser
import EntraClient
import Foundation
import KeyRollCLI
import Provisioning

/// Finds an application by appId, object id, or the name it was provisioned under.
enum ApplicationLookup {
    static func find(_ app: String, in graph: GraphClient) async throws -> Application {
        if UUID(uuidString: app) != nil {
            if let a = try? await graph.application(appId: app) { return a }
            if let a = try? await graph.application(id: app) { return a }
        }
        for try await a in graph.applications(filter: OData.hasTag(Provisioner.marker(for: app))) { return a }
        throw UserFacingError("No application '\(app)' (tried appId, object id and the keyroll:app:\(app) tag).")
    }
}

/// What every privileged, audited command (rebootstrap, retire) asks for: which app, why, and where
/// the audit trail goes.
struct AuditedActionOptions: ParsableArguments {
    @Option(name: .long, help: "The application's appId, object id, or the name it was provisioned under.")
    var app: String

    @Option(name: .long, help: "Why (recorded in the audit log).")
    var reason: String

    @Option(name: .long, help: "Audit log (JSON lines, appended).")
    var auditLog = "keyroll-audit.log"

    /// Who runs the command, for the audit trail.
    var operatorName: String { Environment.current["USER"] ?? Environment.current["LOGNAME"] ?? "unknown" }
}
