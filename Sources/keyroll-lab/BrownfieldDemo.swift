import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Logging
import KeyRollCLI
import Provisioning

/// `keyroll-lab demo --scenario brownfield`: two legacy apps that sign in with client secrets are
/// adopted, their agents roll inside the tenant's lifetime policy, and each secret is retired only
/// when the sign-in log proves nothing uses it: one app moves to KeyRoll and loses its secret after
/// the 14-day window; the other keeps using its secret and keeps it. All on the embedded emulator's
/// virtual clock, through the same code paths as `keyroll adopt`, `keyroll audit --credentials` and
/// `keyroll secrets retire`.
struct BrownfieldDemo {
    let days: Int
    static let day: TimeInterval = 86_400
    static let policyLimit = "P90D"

    /// One legacy app: its secret, and after adoption its agent.
    final class LegacyApp {
        let name: String
        let application: Application
        let secret: NewPasswordCredential
        /// It still signs in with its secret every day (a host nobody migrated).
        let keepsUsingSecret: Bool
        var roller: Roller?
        var movedOn: Date?
        var secretRemovedOn: Date?
        var firstSufficient: Date?
        init(name: String, application: Application, secret: NewPasswordCredential, keepsUsingSecret: Bool) {
            self.name = name
            self.application = application
            self.secret = secret
            self.keepsUsingSecret = keepsUsingSecret
        }
    }

    func run() async throws -> Bool {
        let wallStart = Date()
        let rig = try EmulatorRig()
        let clock = rig.clock
        let provCred = try rig.credential("keyroll-provisioner", days: 3650)
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "keyroll-provisioner",
                                            roles: [.applicationReadWriteAll, .policyReadAll, .auditLogReadAll], certificates: [provCred.certificate])
        let clients = LabClients(emulator: rig.emulator, base: rig.base, tenantID: rig.tenant.id)
        let provisioner = clients.provisioner(as: reg.appId, provCred)
        let graph = provisioner.graph
        let root = NSTemporaryDirectory() + "/keyroll-brownfield-\(UUID().uuidString.prefix(8))"
        try SecureFiles.ensurePrivateDirectory(root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        func say(_ text: String) { print("  \(shortDate(clock.now()))  \(text)") }

        print("KeyRoll brownfield demo — legacy apps with client secrets, adopted and moved off their secrets on evidence (embedded emulator, virtual clock)\n")
        // The tenant as it is: two apps made years ago, each signing in with a client secret, and a
        // tenant policy that caps new certificates at 90 days.
        var apps: [LegacyApp] = []
        for (name, keeps) in [("legacy-orders", false), ("legacy-reports", true)] {
            let app = try await graph.createApplication(displayName: name, tags: ["team:legacy"])
            _ = try await graph.createServicePrincipal(appId: app.appId)
            let secret = try await graph.addPassword(objectID: app.id, displayName: "\(name) secret (in appsettings.json)",
                                                     endDateTime: clock.now().addingTimeInterval(180 * Self.day))
            apps.append(LegacyApp(name: name, application: app, secret: secret, keepsUsingSecret: keeps))
        }
        try rig.emulator.setDefaultAppManagementPolicy(TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(
            keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: Self.policyLimit)])), tenantID: rig.tenant.id)
        print("The tenant: \(apps.map(\.name).joined(separator: " and ")) sign in with client secrets; the tenant's app management policy caps certificates at 90 days.\n")
        print("Timeline (UTC)")
        func signInWithSecret(_ a: LegacyApp) async throws {
            let r = await rig.tokenResponse(clientID: a.application.appId, secret: a.secret.secretText.reveal)
            guard r.status == 200 else { throw DemoFailure("\(a.name)'s secret was refused (\(r.status))") }
        }
        for _ in 0..<10 {
            clock.advance(by: Self.day)
            for a in apps { try await signInWithSecret(a) }
        }
        say("10 days of legacy life: both apps sign in with their secrets every day")

        // Adopt: privileged, audited, inside the policy.
        let adoption = Adoption(provisioner: provisioner, auditLogPath: root + "/audit.log", log: try ProvisionLog(path: root + "/adopt.log"),
                                bundleDir: root + "/bundles", reason: "move legacy apps off client secrets", operator: "platform-team")
        let targets = try await Adoption.resolve([.namePrefix("legacy-")], in: graph).map { Adoption.Target(application: $0) }
        let report = await adoption.execute(targets)
        for e in report.entries {
            guard case .adopted(_, let bundles, _, let lifetimes, _)? = e.outcome, let path = bundles.first,
                  let a = apps.first(where: { $0.application.id == e.target.application.id }) else {
                throw DemoFailure("adopting \(e.target.name) failed: \(e.failure ?? String(describing: e.outcome))")
            }
            let bundle = try BootstrapBundle.decode(try SecureFiles.readSecret(path, limit: 256 * 1024))
            let store = CredentialStore(path: root + "/stores/" + a.name)
            try Roller.importBundle(bundle, into: store, now: clock.now())
            try SecureFiles.shred(path)
            a.roller = try Roller(store: store, transport: clients.transport, clock: clock, sleeper: clients.sleeper, logger: Logger(label: "demo"),
                                  metrics: MetricsRegistry(), random: { 0.5 })
            say("\(a.name.padding(toLength: 15, withPad: " ", startingAt: 0)) adopted (keyroll adopt): tagged keyroll:managed + keyroll:adopted, a 2-day bootstrap bundle; \(lifetimes ?? "no policy limit")")
        }
        clock.advance(by: 300)
        for a in apps {
            guard let roller = a.roller else { continue }
            _ = try await roller.roll(reason: "bootstrap")
            let own = roller.identityStatus()
            say("\(a.name.padding(toLength: 15, withPad: " ", startingAt: 0)) its agent rolled off the bootstrap: own key until \(shortDate(own.activeNotAfter)) (inside the 90-day policy)")
        }
        let orders = apps[0]
        orders.movedOn = clock.now()
        say("legacy-orders   switches to KeyRoll's certificate (the agent's token endpoint); its secret stays registered: nothing proves it unused yet")
        say("legacy-reports  one of its hosts still reads the secret from a config file nobody updated")

        // Every day: the apps sign in, the agents roll when due, and the operator asks whether each
        // secret can go (`keyroll secrets retire`, plan by default).
        let retirement = SecretRetirement(provisioner: provisioner, auditLogPath: root + "/audit.log")
        var lastReasons: [String: String] = [:]
        var lockouts = 0
        let lockoutCheck = LockoutCheck(emulator: rig.emulator)
        for _ in 0..<days {
            clock.advance(by: Self.day)
            for a in apps {
                guard let roller = a.roller else { continue }
                if roller.nextRollDate() <= clock.now() {
                    let outcome = try await roller.roll(reason: "due")
                    say("\(a.name.padding(toLength: 15, withPad: " ", startingAt: 0)) rolled (\({ if case .rolled = outcome { return "inside the policy" } else { return "\(outcome)" } }())): new key until \(shortDate(roller.identityStatus().activeNotAfter))")
                }
                if await !lockoutCheck.violations(roller.store, appId: roller.identity.appId).isEmpty { lockouts += 1 }
                guard let cred = roller.store.published() else { throw DemoFailure("\(a.name) has no published key") }
                _ = try await rig.token(clientID: a.application.appId, credential: cred)
                if a.keepsUsingSecret { try await signInWithSecret(a) }
                guard a.secretRemovedOn == nil else { continue }
                let plan = try await retirement.plan(application: a.application)
                guard let decision = plan.decisions.first else { continue }
                switch decision {
                case .refuse(_, let reasons, let sufficientAt):
                    let summary = reasons.map { String($0.prefix(3)) }.joined(separator: " ")
                    if lastReasons[a.name] != summary {
                        lastReasons[a.name] = summary
                        let when = sufficientAt.map { "evidence would suffice on \(shortDate($0))" } ?? "waiting alone cannot make it suffice"
                        say("\(a.name.padding(toLength: 15, withPad: " ", startingAt: 0)) secrets retire (plan): refused \(summary) — \(when)")
                        for r in reasons { print("  \(String(repeating: " ", count: 16))    \(r.prefix(150))\(r.count > 150 ? "…" : "")") }
                        if a.firstSufficient == nil { a.firstSufficient = sufficientAt }
                    }
                case .retire(let e):
                    let outcomes = try await retirement.apply(application: a.application, reason: "unused for \(e.windowDays) days; app on KeyRoll", operator: "platform-team")
                    guard outcomes.contains(where: { if case .removed = $0 { return true }; return false }) else { continue }
                    a.secretRemovedOn = clock.now()
                    say("\(a.name.padding(toLength: 15, withPad: " ", startingAt: 0)) secrets retire --apply: removed (no use for \(e.windowDays) days, KeyRoll sign-ins on each of them; audited). A removed secret cannot be brought back.")
                }
            }
        }

        // The verdicts as an operator sees them, and the checks.
        let audit = try await Auditor(graph: graph).scan(now: clock.now(), expiringWithinDays: 30)
        let view = await EvidenceCollector(graph: graph).view(for: audit)
        let legacyView = CredentialReport.View(generatedAt: view.generatedAt, windowDays: view.windowDays, retentionDays: view.retentionDays,
                                               reportUnavailable: view.reportUnavailable, credentials: view.credentials.filter { $0.app.hasPrefix("legacy-") })
        print("\nPer-credential evidence (keyroll audit --credentials)")
        print(CredentialReport.table(legacyView))
        let progress = MigrationProgress.of(audit, view: view, expiringWithinDays: 30)
        print(progress.summary)
        let ordersSecretGone = try rig.emulator.applications(tenantID: rig.tenant.id).first { $0.appId == orders.application.appId }?.passwordCredentials.isEmpty == true
        let reportsSecretKept = try rig.emulator.applications(tenantID: rig.tenant.id).first { $0.appId == apps[1].application.appId }?.passwordCredentials.count == 1
        let secretRefused = await rig.tokenResponse(clientID: orders.application.appId, secret: orders.secret.secretText.reveal).status != 200
        var ok = true
        print("")
        if let moved = orders.movedOn, let removed = orders.secretRemovedOn, removed.timeIntervalSince(moved) >= 14 * Self.day, ordersSecretGone, secretRefused {
            print("✔ legacy-orders' secret was removed \(Int(removed.timeIntervalSince(moved) / Self.day)) days after the app moved to KeyRoll (window 14 days), and Entra refuses it now.")
        } else {
            ok = false
            print("✘ legacy-orders' secret: moved \(orders.movedOn.map(shortDate) ?? "-"), removed \(orders.secretRemovedOn.map(shortDate) ?? "never"), gone \(ordersSecretGone), refused \(secretRefused)")
        }
        if apps[1].secretRemovedOn == nil, reportsSecretKept {
            print("✔ legacy-reports still uses its secret, so it was never removed.")
        } else { ok = false; print("✘ legacy-reports lost a secret it still uses.") }
        let audited = JSONLinesFile.lines(at: root + "/audit.log").compactMap { try? JSONValue.parse(Array($0)) }
        let phases = audited.filter { $0["action"]?.stringValue == "retire-secret" }.compactMap { $0["phase"]?.stringValue }
        print("Audit trail: \(audited.count) records (adopt and retire, each an intent before its write and an outcome after it)\(phases.isEmpty ? "" : "; secret retirement: \(phases.joined(separator: " → "))").")
        if lockouts == 0 { print("✔ No app was ever without a registered, valid, proven key.") } else { ok = false; print("✘ \(lockouts) lockout checks failed.") }
        print(String(format: "Finished in %.1f s of real time.", Date().timeIntervalSince(wallStart)))
        return ok
    }
}

struct DemoFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
