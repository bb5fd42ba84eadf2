import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
import Logging
import Provisioning

/// The demo's multi-host app: provisioned from a manifest with `replicas: N` (the same path as
/// `keyroll provision`), one store per replica, scaled out by raising N.
final class ReplicatedApp: @unchecked Sendable {
    let name: String
    let root: String
    let provisioner: Provisioner
    let clock: any WallClock
    private(set) var application: Application?
    private(set) var bundles: [String] = []
    var appId: String? { application?.appId }

    init(name: String, root: String, provisioner: Provisioner, clock: any WallClock) {
        self.name = name
        self.root = root
        self.provisioner = provisioner
        self.clock = clock
    }

    func label(_ replica: ReplicaName) -> String { "\(name) \(replica)" }

    /// Runs the provisioner for `replicas` and imports each newly issued bundle into its own
    /// store; returns the replicas issued.
    func scale(to replicas: Int) async throws -> [ReplicaName] {
        let app = Manifest.App(name: name, bundlePath: root + "/bundles/" + BundleName.fileName(for: name), replicas: replicas)
        let run = ProvisionRun(provisioner: provisioner, manifest: Manifest(apps: [app]), log: try ProvisionLog(path: root + "/provision.log"))
        let report = try await run.execute()
        if let failure = report.failures[name] { throw LabFailure("provisioning \(name): \(failure)") }
        guard case .replicas(let appId, _, let issued, _, _)? = report.outcomes[name] else { throw LabFailure("provisioning \(name): no outcome") }
        if application == nil { application = try await provisioner.graph.application(appId: appId) }
        for r in issued {
            let path = app.bundlePath(for: r)
            let bundle = try BootstrapBundle.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            try Roller.importBundle(bundle, into: CredentialStore(path: storePath(r)), now: clock.now())
            bundles.append((path as NSString).lastPathComponent)
            try? SecureFiles.shred(path)  // imported: the bootstrap key now lives only in the replica's store
        }
        return issued
    }

    func storePath(_ replica: ReplicaName) -> String { root + "/" + name + "-" + replica.rawValue }

    func roller(_ replica: ReplicaName, transport: any HTTPTransport, sleeper: any Sleeper, events: @escaping @Sendable (AgentEvent) -> Void,
                random r: Double) throws -> Roller {
        try Roller(store: CredentialStore(path: storePath(replica)), transport: transport, clock: clock, sleeper: sleeper, logger: Logger(label: "demo"),
                   observer: events, random: { r })
    }
}

struct LabFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
