import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import Logging
import Provisioning

struct ProvisionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provision",
        abstract: "Create app registrations from a manifest, each with a short-lived bootstrap certificate and a bundle for its agent.",
        discussion: """
            The manifest is YAML (apps: [{name, tags, notes, owners, bundle, replicas}], defaults: {bundleDir, tags, \
            bootstrapValidityDays, keyCredentialLimit}) or CSV (header: name,tags,notes,owners,bundle,replicas). An app with \
            'replicas: N' gets one bundle per host (NAME.r1.json … NAME.rN.json); raising N later issues only the new ones \
            (scale out), and 'keyroll retire' removes a replica's keys (scale in). Re-running is safe: apps are found by their keyroll:app:NAME tag, \
            and a run killed at any point resumes from its log (MANIFEST.log by default). The provisioner keeps no private key: \
            each bootstrap key exists only in its bundle (0600).
            """)

    @Argument(help: "Manifest (.yaml, .yml or .csv).")
    var manifest: String

    @OptionGroup var identity: ProvisionerOptions

    @Option(name: .long, help: "Progress log for resuming (default: MANIFEST.log).")
    var log: String?

    @Flag(name: .long, help: "Show what would be created and the Graph writes it needs; change nothing.")
    var plan = false

    @Option(name: .long, help: "Starting concurrency (it adapts to throttling).")
    var concurrency = 8

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let m = try Manifest.load(path: manifest)
        let (provisioner, transport) = try identity.connect()
        try await transport.closing {
            let run = ProvisionRun(provisioner: provisioner, manifest: m, log: try ProvisionLog(path: log ?? manifest + ".log"),
                                   limit: AdaptiveLimit(start: concurrency, maximum: max(concurrency, 32)))
            if plan {
                let p = try await run.plan()
                print("Plan for \(m.apps.count) apps in \(manifest):")
                print("  create (application + service principal + bootstrap certificate): \(p.toCreate.count)")
                print("  existing, needs a bootstrap bundle (read-merge-PATCH-verify):      \(p.toBootstrap.count)")
                print("  already provisioned by an earlier run:                              \(p.done.count)")
                print("  Graph writes: \(p.writes) (POST application with its certificate, POST servicePrincipal; PATCH for existing apps)")
                print("  Graph reads:  \(p.reads) (one paged listing, plus read and verify for each existing app)")
                print(String(format: "  at Graph's budget (3,000 writes / 150 s per app+tenant; 150 keyCredential reads / min) this takes at least %.0f s", p.minimumSeconds))
                for name in p.toCreate.prefix(20) { print("    + \(name)") }
                if p.toCreate.count > 20 { print("    … \(p.toCreate.count - 20) more") }
                return
            }
            let progress = ProgressReporter(title: "provision", total: m.apps.count)
            let report = try await run.execute(progress: progress)
            var counts: [String: Int] = [:]
            for o in report.outcomes.values {
                switch o {
                case .created: counts["created", default: 0] += 1
                case .bootstrapIssued: counts["bootstrap issued", default: 0] += 1
                case .alreadyProvisioned: counts["already provisioned", default: 0] += 1
                case .agentOwnsIt: counts["rolled by its agent", default: 0] += 1
                case .needsRebootstrap: counts["needs rebootstrap", default: 0] += 1
                case .replicas(_, let created, let issued, _, _):
                    counts[created ? "created" : issued.isEmpty ? "already provisioned" : "scaled out", default: 0] += 1
                }
            }
            print(String(format: "%d apps in %.1f s: ", m.apps.count, report.seconds) + counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                  + ", \(report.failures.count) failed; throttled \(report.throttleEvents) times")
            for (name, o) in report.outcomes.sorted(by: { $0.key < $1.key }) {
                if case .needsRebootstrap(_, let why) = o { print("  \(name): \(why)") }
                if case .replicas(let appId, _, let issued, let kept, let beyond) = o {
                    let bundles = issued.compactMap { r in m.apps.first { $0.name == name }?.bundlePath(for: r) }
                    print("  \(name): replicas issued [\(issued.map(\.rawValue).joined(separator: ", "))], kept [\(kept.map(\.rawValue).joined(separator: ", "))]"
                          + (bundles.isEmpty ? "" : "; bundles: \(bundles.joined(separator: ", "))"))
                    for r in beyond {
                        print("  \(name): replica \(r) has keys in Entra but is beyond the manifest's replicas; once its host is gone: keyroll retire --app \(appId) --replica \(r) --reason \"scale in\"")
                    }
                }
            }
            for (name, e) in report.failures.sorted(by: { $0.key < $1.key }) { print("  \(name): FAILED: \(e)") }
            if !report.failures.isEmpty { throw ExitCode(1) }
        }
    }
}
