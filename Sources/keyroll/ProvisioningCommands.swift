import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import Logging
import Provisioning

/// The provisioner's identity, from the usual Azure variables (flags win).
struct ProvisionerOptions: ParsableArguments {
    @Option(name: .long, help: "Tenant id or domain (default: $AZURE_TENANT_ID).")
    var tenant: String?

    @Option(name: .long, help: "The provisioner's application (client) id (default: $AZURE_CLIENT_ID).")
    var clientId: String?

    @Option(name: .long, help: "PEM with the provisioner's key and certificate (default: $AZURE_CLIENT_CERTIFICATE_PATH; or $AZURE_CLIENT_SECRET).")
    var certificate: String?

    @Option(name: .long, help: "Authority host (default: $AZURE_AUTHORITY_HOST or https://login.microsoftonline.com).")
    var authority: String?

    @Option(name: .long, help: "Graph base URL (default: $KEYROLL_GRAPH_URL, else {authority}/v1.0 for a local emulator, else https://graph.microsoft.com/v1.0).")
    var graphURL: String?

    @OptionGroup var trust: TrustOptions

    func connect(retry: RetryPolicy = RetryPolicy(maxAttempts: 12)) throws -> (Provisioner, AsyncHTTPTransport) {
        let env = Environment.current
        guard let tenant = tenant ?? env["AZURE_TENANT_ID"] else { throw ValidationError("Name the tenant: --tenant or AZURE_TENANT_ID.") }
        guard let clientId = clientId ?? env["AZURE_CLIENT_ID"] else { throw ValidationError("Name the provisioner: --client-id or AZURE_CLIENT_ID.") }
        let authority = authority ?? env["AZURE_AUTHORITY_HOST"] ?? "https://login.microsoftonline.com"
        let authorityURL = authority.contains("://") ? authority : "https://" + authority
        try SecureURL.check(authorityURL, what: self.authority != nil ? "--authority" : env["AZURE_AUTHORITY_HOST"] != nil ? "AZURE_AUTHORITY_HOST" : "the authority")
        let isLocal = URLComponents(string: authorityURL)?.host.map(SecureURL.isLoopback(host:)) ?? false
        let graph = graphURL ?? env["KEYROLL_GRAPH_URL"] ?? (isLocal ? authorityURL + "/v1.0" : "https://graph.microsoft.com/v1.0")
        try SecureURL.check(graph, what: graphURL != nil ? "--graph-url" : env["KEYROLL_GRAPH_URL"] != nil ? "KEYROLL_GRAPH_URL" : "the Graph URL")
        let credential: ClientCredential
        if certificate == nil, env["AZURE_CLIENT_CERTIFICATE_PATH"] != nil, env["AZURE_CLIENT_SECRET"] != nil {
            throw ValidationError("Both AZURE_CLIENT_CERTIFICATE_PATH and AZURE_CLIENT_SECRET are set; KeyRoll will not guess which one you mean. Unset one (a certificate is safer).")
        }
        if let path = certificate ?? env["AZURE_CLIENT_CERTIFICATE_PATH"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw UserFacingError("Cannot read the provisioner certificate \(path).") }
            credential = .certificate(try SigningCredential(combinedPEM: text, passphrase: env["AZURE_CLIENT_CERTIFICATE_PASSWORD"]))
        } else if let secret = env["AZURE_CLIENT_SECRET"] {
            credential = .secret(secret)
        } else {
            throw ValidationError("Give the provisioner a credential: --certificate, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_CLIENT_SECRET.")
        }
        let endpoints = EntraEndpoints(authorityHost: authorityURL, tenant: tenant, graphBaseURL: graph)
        let transport = try trust.transport()
        let tokens = TokenProvider(endpoints: endpoints, clientID: clientId, transport: transport, retry: retry)
        return (Provisioner(graph: GraphClient(endpoints: endpoints, tokens: tokens, auth: credential, transport: transport, retry: retry)), transport)
    }
}

struct ProvisionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provision",
        abstract: "Create app registrations from a manifest, each with a short-lived bootstrap certificate and a bundle for its agent.",
        discussion: """
            The manifest is YAML (apps: [{name, tags, notes, owners, bundle}], defaults: {bundleDir, tags, bootstrapValidityDays}) \
            or CSV (header: name,tags,notes,owners,bundle). Re-running is safe: apps are found by their keyroll:app:NAME tag, \
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
                }
            }
            print(String(format: "%d apps in %.1f s: ", m.apps.count, report.seconds) + counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                  + ", \(report.failures.count) failed; throttled \(report.throttleEvents) times")
            for (name, o) in report.outcomes.sorted(by: { $0.key < $1.key }) {
                if case .needsRebootstrap(_, let why) = o { print("  \(name): \(why)") }
            }
            for (name, e) in report.failures.sorted(by: { $0.key < $1.key }) { print("  \(name): FAILED: \(e)") }
            if !report.failures.isEmpty { throw ExitCode(1) }
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Classify every credential of every application: healthy, bootstrap not rolled, expiring, past the cliff, drift, leftovers.",
        discussion: "Exit status is the worst finding: 0 healthy, 1 expiring or leftovers, 2 bootstrap not rolled, 3 drift, 4 past the cliff.")

    @OptionGroup var identity: ProvisionerOptions

    @Option(name: .long, help: "A certificate expiring within this many days is flagged.")
    var expiringDays: Double = 30

    @Flag(name: .long, help: "Only applications tagged keyroll:managed.")
    var managedOnly = false

    @Flag(name: .long, help: "JSON on stdout.")
    var json = false

    @Flag(name: .long, help: "CSV on stdout (one row per credential).")
    var csv = false

    @Option(name: .long, help: "Also write a self-contained HTML report with an expiry timeline to this file.")
    var html: String?

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let (provisioner, transport) = try identity.connect()
        let audit = try await transport.closing {
            try await Auditor(graph: provisioner.graph).scan(now: provisioner.graph.correctedNow, expiringWithinDays: expiringDays, managedOnly: managedOnly)
        }
        if json { print(AuditReport.json(audit)) } else if csv { print(AuditReport.csv(audit), terminator: "") } else { print(AuditReport.table(audit)) }
        if let html {
            try AuditReport.html(audit).write(toFile: html, atomically: true, encoding: .utf8)
            if !json && !csv { print("HTML report: \(html)") }
        }
        if audit.exitCode != 0 { throw ExitCode(audit.exitCode) }
    }
}

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
