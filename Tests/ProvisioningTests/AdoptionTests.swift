import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

private let day: TimeInterval = 86_400

@Suite struct PolicyDurationTests {
    @Test func isoDurationsAsPoliciesWriteThem() {
        #expect(ISO8601Duration.seconds("P90D") == 90 * day)
        #expect(ISO8601Duration.seconds("P99999999999999999999999D") == nil, "beyond 100 years is not a limit anyone can mean")
        #expect(ISO8601Duration.seconds("PT12H") == 12 * 3600.0)
        #expect(ISO8601Duration.seconds("P4DT12H30M5S") == 4 * day + 12 * 3600 + 30 * 60 + 5)
        #expect(ISO8601Duration.seconds("PT0.5S") == 0.5)
        #expect(ISO8601Duration.seconds("P2W") == 14 * day)
        // years and months at their shortest: a limit read from them is never longer than Entra's
        #expect(ISO8601Duration.seconds("P1Y") == 365 * day)
        #expect(ISO8601Duration.seconds("P1Y6M") == (365 + 6 * 28) * day)
        #expect(ISO8601Duration.seconds("P1M") == 28 * day)
        #expect(ISO8601Duration.seconds("PT1M") == 60, "M after T is minutes")
        for bad in ["", "P", "PT", "90D", "P-1D", "-P1D", "P1.5DT2H", "P1H", "PT1D", "P1D1Y", "P1DT", "PD", "P.5D", "P1..5D", "p90d", "P90D ", "P1D2D"] {
            #expect(ISO8601Duration.seconds(bad) == nil, "\(bad.debugDescription) was read")
        }
    }
}

@Suite struct CredentialLimitTests {
    let cutoff = Date(timeIntervalSince1970: 1_800_000_000)

    func restriction(_ type: String, _ max: String? = nil, after: Date? = nil, state: String? = "enabled") -> GraphCredentialRestriction {
        GraphCredentialRestriction(restrictionType: type, state: state, maxLifetime: max, restrictForAppsCreatedAfterDateTime: after)
    }

    var tenantDefault: GraphAppManagementPolicy {
        GraphAppManagementPolicy(id: "00000000-0000-0000-0000-000000000000", displayName: "Default app management tenant policy", isEnabled: true,
                                 applicationRestrictions: .init(passwordCredentials: [restriction("passwordAddition", after: cutoff), restriction("passwordLifetime", "P90D")],
                                                                keyCredentials: [restriction("asymmetricKeyLifetime", "P180D", after: cutoff)]))
    }

    @Test func theTenantDefaultBindsByCreationDate() throws {
        let old = try AppCredentialLimits.effective(assigned: [], tenantDefault: tenantDefault, appCreatedAt: cutoff.addingTimeInterval(-1))
        #expect(old.maxCertificateLifetime == nil && !old.passwordAdditionBlocked && old.maxPasswordLifetime == 90 * day)
        let new = try AppCredentialLimits.effective(assigned: [], tenantDefault: tenantDefault, appCreatedAt: cutoff)
        #expect(new.maxCertificateLifetime == 180 * day && new.passwordAdditionBlocked)
        #expect(new.certificatePolicy?.id == "00000000-0000-0000-0000-000000000000")
        #expect(new.certificateSummary.contains("P180D") && new.certificateSummary.contains("180 days"))
        let unknown = try AppCredentialLimits.effective(assigned: [], tenantDefault: tenantDefault, appCreatedAt: nil)
        #expect(unknown.maxCertificateLifetime == 180 * day, "an app of unknown age is taken as bound")
        var disabled = tenantDefault
        disabled.isEnabled = false
        #expect(try AppCredentialLimits.effective(assigned: [], tenantDefault: disabled, appCreatedAt: cutoff) == AppCredentialLimits.unlimited)
    }

    @Test func anAssignedPolicyWinsForTheTypesItNamesAndTheDefaultKeepsTheRest() throws {
        let new = cutoff.addingTimeInterval(day)
        let thirty = GraphAppManagementPolicy(id: "p30", displayName: "thirty days", isEnabled: true,
                                              restrictions: .init(keyCredentials: [restriction("asymmetricKeyLifetime", "P30D")]))
        let limits = try AppCredentialLimits.effective(assigned: [thirty], tenantDefault: tenantDefault, appCreatedAt: new)
        #expect(limits.maxCertificateLifetime == 30 * day && limits.certificatePolicy?.id == "p30")
        #expect(limits.passwordAdditionBlocked && limits.maxPasswordLifetime == 90 * day, "the default keeps the types the policy does not name")
        // a restriction the assigned policy names but disables lifts the default's (both readings of the docs agree)
        let lifted = GraphAppManagementPolicy(id: "open", isEnabled: true,
                                              restrictions: .init(keyCredentials: [restriction("asymmetricKeyLifetime", "P30D", state: "disabled")]))
        #expect(try AppCredentialLimits.effective(assigned: [lifted], tenantDefault: tenantDefault, appCreatedAt: new).maxCertificateLifetime == nil)
        // a disabled assigned policy binds nothing: the default applies
        var off = thirty
        off.isEnabled = false
        #expect(try AppCredentialLimits.effective(assigned: [off], tenantDefault: tenantDefault, appCreatedAt: new).maxCertificateLifetime == 180 * day)
        // an assigned restriction dated after the app's creation does not bind it
        let dated = GraphAppManagementPolicy(id: "dated", isEnabled: true,
                                             restrictions: .init(keyCredentials: [restriction("asymmetricKeyLifetime", "P30D", after: new.addingTimeInterval(1))]))
        #expect(try AppCredentialLimits.effective(assigned: [dated], tenantDefault: tenantDefault, appCreatedAt: new).maxCertificateLifetime == nil)
    }

    @Test func aLifetimeKeyRollCannotReadNamesThePolicy() {
        let odd = GraphAppManagementPolicy(id: "odd-policy", displayName: "odd", isEnabled: true,
                                           restrictions: .init(keyCredentials: [restriction("asymmetricKeyLifetime", "P1Q")]))
        do {
            _ = try AppCredentialLimits.effective(assigned: [odd], tenantDefault: nil, appCreatedAt: cutoff)
            Issue.record("an unreadable duration was accepted")
        } catch let e as AppCredentialLimits.Unreadable {
            #expect(e.description.contains("odd-policy") && e.description.contains("P1Q") && e.description.contains("--max-certificate-days"), "\(e)")
        } catch { Issue.record("\(error)") }
    }
}

@Suite struct AdoptionRuleTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func key(_ name: String?, type: String? = "AsymmetricX509Cert", usage: String? = "Verify", days: Double = 365) -> KeyCredential {
        KeyCredential(keyId: UUID().uuidString.lowercased(), displayName: name, startDateTime: now.addingTimeInterval(-400 * day),
                      endDateTime: now.addingTimeInterval(days * day), type: type, usage: usage)
    }

    func app(keys: [KeyCredential] = [], secrets: Int = 0, tags: [String] = []) -> Application {
        Application(id: UUID().uuidString.lowercased(), appId: UUID().uuidString.lowercased(), displayName: "legacy", keyCredentials: keys,
                    passwordCredentials: (0..<secrets).map { _ in secret() }, tags: tags)
    }

    /// A client secret as Graph lists it.
    func secret() -> PasswordCredential {
        try! JSONDecoder().decode(PasswordCredential.self, from: Data(#"{"keyId":"\#(UUID().uuidString.lowercased())","displayName":"s"}"#.utf8))
    }

    func refusal(_ a: Application, replicas: [ReplicaName?] = [nil]) -> String? {
        if case .refused(let why) = AdoptionRules.assess(app: a, replicas: replicas, now: now) { return why }
        return nil
    }

    @Test func secretsAndCertificatesAreUnderstoodAndKept() {
        guard case .adoptable(let plan) = AdoptionRules.assess(app: app(keys: [key("CN=partner"), key("CN=old", days: -10)], secrets: 2), replicas: [nil], now: now) else {
            Issue.record("not adoptable"); return
        }
        #expect(plan.needsMark && plan.secrets == 2 && plan.foreignCertificates == 2 && plan.replicasWithKeys.isEmpty)
    }

    @Test func whatKeyRollDoesNotUnderstandIsRefusedWithTheReason() {
        #expect(refusal(app(keys: [key("shared", type: "Symmetric")], secrets: 1))?.contains("symmetric key") == true)
        #expect(refusal(app(keys: [key("CN=saml", usage: "Sign")]))?.contains("usage Sign") == true)
        #expect(refusal(app(keys: [key("CN=x", type: nil)]))?.contains("no type") == true)
        #expect(refusal(app(keys: [key("CN=x", type: "X509CertAndPassword", usage: "Sign")]))?.contains("X509CertAndPassword") == true)
        var noDates = key("CN=x")
        noDates.endDateTime = nil
        #expect(refusal(app(keys: [noDates]))?.contains("start and end date") == true)
        #expect(refusal(app(keys: [key("CN=keyroll-bootstrap")]))?.contains("not tagged keyroll:managed") == true)
    }

    @Test func managedAppsAreSkippedAndAdoptedOnesKnowTheirReplicas() throws {
        guard case .alreadyManaged(let why) = AdoptionRules.assess(app: app(keys: [key("CN=keyroll-bootstrap")], tags: [Provisioner.managedTag]), replicas: [nil], now: now) else {
            Issue.record("a provisioned app was not skipped"); return
        }
        #expect(why.contains("already managed"))
        let adopted = [Provisioner.managedTag, Provisioner.adoptedTag]
        guard case .adoptable(let plan) = AdoptionRules.assess(app: app(keys: [key("CN=keyroll-bootstrap@r1"), key("CN=partner")], secrets: 1, tags: adopted),
                                                               replicas: [ReplicaName.numbered(1), .numbered(2)], now: now) else {
            Issue.record("an adopted app was refused"); return
        }
        #expect(!plan.needsMark && plan.replicasWithKeys == [ReplicaName.numbered(1)] && plan.foreignCertificates == 1)
        // hosts that do not fit what Graph shows are refused, never mixed
        #expect(refusal(app(keys: [key("CN=keyroll-bootstrap@r1")], tags: adopted))?.contains("--replicas") == true)
        #expect(refusal(app(keys: [key("CN=keyroll-bootstrap")], tags: adopted), replicas: [ReplicaName.numbered(1)])?.contains("one host") == true)
    }

    @Test func lifetimesStayInsideThePolicy() throws {
        let thirty = AppCredentialLimits(maxCertificateLifetime: 30 * day, certificatePolicy: .init(id: "p30", displayName: "thirty"), certificateMaxLifetimeText: "P30D")
        let a = try AdoptionRules.chooseLifetimes(limits: thirty, operatorCap: nil, requestedBootstrap: 2 * day)
        #expect(a.maximumCertificateValidity == 30 * day && a.bootstrapValidity == 2 * day && a.source.contains("p30") && a.warning == nil)
        let b = try AdoptionRules.chooseLifetimes(limits: thirty, operatorCap: 90 * day, requestedBootstrap: 2 * day)
        #expect(b.maximumCertificateValidity == 30 * day, "the operator's limit never goes above the policy's")
        let c = try AdoptionRules.chooseLifetimes(limits: thirty, operatorCap: 10 * day, requestedBootstrap: 2 * day)
        #expect(c.maximumCertificateValidity == 10 * day && c.source.contains("--max-certificate-days 10"))
        let none = try AdoptionRules.chooseLifetimes(limits: AppCredentialLimits.unlimited, operatorCap: nil, requestedBootstrap: 2 * day)
        #expect(none.maximumCertificateValidity == nil && none.bootstrapValidity == 2 * day)
        // a short limit shortens the bootstrap so that it fits, backdate included, and warns about the agent's default policy
        let short = AppCredentialLimits(maxCertificateLifetime: 1.5 * day, certificatePolicy: .init(id: "p", displayName: nil), certificateMaxLifetimeText: "PT36H")
        let d = try AdoptionRules.chooseLifetimes(limits: short, operatorCap: nil, requestedBootstrap: 2 * day)
        #expect(d.bootstrapValidity + 300 < 1.5 * day && d.warning != nil)
        let tooShort = AppCredentialLimits(maxCertificateLifetime: 12 * 3600, certificatePolicy: .init(id: "p12", displayName: nil), certificateMaxLifetimeText: "PT12H")
        #expect(throws: PrivilegedActionRefused.self) { try AdoptionRules.chooseLifetimes(limits: tooShort, operatorCap: nil, requestedBootstrap: 2 * day) }
        // unreadable policies: refused unless the operator says the limit
        do {
            _ = try AdoptionRules.chooseLifetimes(limits: nil, unreadable: "no Policy.Read.All", operatorCap: nil, requestedBootstrap: 2 * day)
            Issue.record("lifetimes were chosen without a policy")
        } catch let e as PrivilegedActionRefused { #expect(e.description == "no Policy.Read.All") }
        let op = try AdoptionRules.chooseLifetimes(limits: nil, unreadable: "x", operatorCap: 60 * day, requestedBootstrap: 2 * day)
        #expect(op.maximumCertificateValidity == 60 * day && op.source.contains("could not be read"))
    }

    @Test func theAgentCapsItsPolicyWithTheAppsLimit() throws {
        let policy = RollPolicy()
        let capped = try policy.validated(cappedBy: 30 * day, identity: "store")
        #expect(capped.effectiveValidity == 30 * day)
        let w = capped.newCertificateWindow(now: now)
        #expect(w.notAfter.timeIntervalSince(w.notBefore) <= 30 * day - 60, "the whole window, backdate included, is inside the limit")
        #expect(try policy.validated(cappedBy: nil, identity: "store") == policy)
        var lower = RollPolicy()
        lower.tenantMaximumValidity = 20 * day
        #expect(try lower.validated(cappedBy: 30 * day, identity: "store").effectiveValidity == 20 * day, "the lower limit applies")
        do {
            _ = try policy.validated(cappedBy: 3 * day, identity: "/stores/web")
            Issue.record("a limit that leaves no room to roll was accepted")
        } catch let e as RollPolicy.Invalid {
            #expect(e.field == "maximumCertificateValidity" && e.description.contains("/stores/web") && e.description.contains("rollAtFraction"), "\(e)")
        }
    }

    @Test func bundlesAndStoresWithoutALimitStillRead() throws {
        let old = #"{"format":"keyroll-bootstrap/1","tenantId":"t","authorityHost":"https://login","graphBaseURL":"https://graph/v1.0","applicationObjectId":"o","appId":"a","bootstrap":{"keyId":null,"certificatePEM":"c","privateKeyPEM":"k"},"createdAt":"2027-01-01T00:00:00Z","createdBy":null}"#
        let b = try BootstrapBundle.decode(Array(old.utf8))
        #expect(b.maximumCertificateValidity == nil)
        var withCap = b
        withCap.maximumCertificateValidity = 30 * day
        #expect(try BootstrapBundle.decode(try withCap.encoded()).maximumCertificateValidity == 30 * day)
        #expect(!String(decoding: try b.encoded(), as: UTF8.self).contains("maximumCertificateValidity"), "absent when there is none")
        let identity = #"{"tenantId":"t","authorityHost":"https://login","graphBaseURL":"https://graph/v1.0","applicationObjectId":"o","appId":"a"}"#
        let i = try JSONDecoder().decode(CredentialStore.Identity.self, from: Data(identity.utf8))
        #expect(i.maximumCertificateValidity == nil)
        #expect(CredentialStore.Identity(bundle: withCap).maximumCertificateValidity == 30 * day)
    }
}

/// A tenant of legacy applications, made through Graph as people made them: secrets (one in use
/// by a daemon, one never used), a partner's certificate, a web app whose secret serves delegated
/// sign-in, an app with a symmetric key, and a restrictive lifetime policy on one app.
struct LegacyTenant {
    let c: Central
    let token: String
    var apps: [String: Application] = [:]
    /// Secret text by app name, for the ones a daemon uses.
    var secrets: [String: String] = [:]

    static let defaultLimit = "P200D"
    static let shortLimit = "P30D"

    init(_ c: Central, foreign: SigningCredential) async throws {
        self.c = c
        let rig = c.rig
        try rig.emulator.grant([.applicationReadWriteAll, .policyReadAll], toAppId: c.provisioner.graph.tokens.clientID)
        token = try await rig.token(clientID: c.provisioner.graph.tokens.clientID, credential: c.cred)
        let graph = c.provisioner.graph
        for name in ["legacy-daemon", "legacy-web", "legacy-partner", "legacy-short", "legacy-symmetric"] {
            let app = try await graph.createApplication(displayName: name, tags: ["team:legacy"])
            if name != "legacy-partner" { _ = try await graph.createServicePrincipal(appId: app.appId) }  // one without: adopt makes it
            apps[name] = app
        }
        // a daemon's secret in use, and one nobody uses
        let inUse = try await addPassword("legacy-daemon", "daemon secret")
        _ = try await addPassword("legacy-daemon", "forgotten secret")
        secrets["legacy-daemon"] = inUse.text
        let r = await rig.tokenResponse(clientID: apps["legacy-daemon"]!.appId, secret: inUse.text)
        guard r.status == 200 else { throw ToolError("the daemon's secret does not sign in: \(r.status)") }
        // a web app: its secret redeems users' codes (delegated sign-in)
        let web = try await addPassword("legacy-web", "web secret")
        try rig.emulator.recordDelegatedSignIn(appId: apps["legacy-web"]!.appId, userPrincipalName: "ada@contoso.onmicrosoft.com", credentialKeyId: web.keyId)
        // a partner's certificate, added by PATCH as the portal does
        let entry: JSONValue = .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(foreign.certificate.der)),
                                        "displayName": "CN=partner-integration"])
        try await graph.updateApplication(id: apps["legacy-partner"]!.id, ["keyCredentials": .array([entry])])
        // the restrictive policy, and a secret
        try rig.emulator.assignAppManagementPolicy(AppManagementPolicy(displayName: "thirty days", isEnabled: true,
                                                                       restrictions: .init(keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: Self.shortLimit)])),
                                                   toAppId: apps["legacy-short"]!.appId)
        _ = try await addPassword("legacy-short", "short secret")
        // a symmetric key (and a secret)
        let now = rig.clock.now()
        let symmetric: JSONValue = .object(["type": "Symmetric", "usage": "Verify", "key": .string(Base64.encode((0..<32).map { UInt8($0) })),
                                            "displayName": "shared key", "startDateTime": .string(UTCTime.iso(now)),
                                            "endDateTime": .string(UTCTime.iso(now.addingTimeInterval(300 * day)))])
        try await graph.updateApplication(id: apps["legacy-symmetric"]!.id, ["keyCredentials": .array([symmetric])])
        _ = try await addPassword("legacy-symmetric", "sym secret")
        // the tenant's policy came later: new certificates at most 200 days (it does not touch what exists)
        try rig.emulator.setDefaultAppManagementPolicy(TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(
            passwordCredentials: [.init("passwordAddition", restrictForAppsCreatedAfterDateTime: rig.clock.now().addingTimeInterval(365 * day))],
            keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: Self.defaultLimit)])), tenantID: rig.tenant.id)
    }

    func addPassword(_ name: String, _ display: String) async throws -> (keyId: String, text: String) {
        let r = await c.rig.graph("POST", "/v1.0/applications/\(apps[name]!.id)/addPassword", token: token,
                                  json: .object(["passwordCredential": .object(["displayName": .string(display)])]))
        guard r.status == 200, let keyId = r.json?["keyId"]?.stringValue, let text = r.json?["secretText"]?.stringValue else {
            throw ToolError("addPassword on \(name): \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return (keyId, text)
    }

    /// An application as Graph shows it now: its secrets, keys and tags.
    func read(_ name: String) async throws -> Application {
        try await c.provisioner.graph.application(id: apps[name]!.id, select: ["id", "appId", "displayName", "tags", "keyCredentials", "passwordCredentials"])
    }
}

@Suite struct AdoptionTests {
    /// A re-bootstrap (the recovery path for an adopted app) keeps the app's policy: the new bundle
    /// carries the certificate limit and its bootstrap fits inside it.
    @Test func aRebootstrapCarriesTheAppsCertificateLimit() async throws {
        let c = try Central()
        let tenant = try await LegacyTenant(c, foreign: try c.rig.credential("partner-integration", days: 365))
        let short = tenant.apps["legacy-short"]!
        let bundle = try await Rebootstrap(provisioner: c.provisioner, auditLogPath: c.dir + "/audit.log")
            .run(application: short, bundlePath: c.dir + "/reboot.json", force: true, reason: "test", operator: "t")
        #expect(bundle.maximumCertificateValidity == 30 * day)
        let cert = try bundle.signingCredential().certificate
        #expect(cert.notAfter.timeIntervalSince(cert.notBefore) <= 30 * day)
        // an app under the tenant default only: its 200-day limit
        let daemon = try await Rebootstrap(provisioner: c.provisioner, auditLogPath: c.dir + "/audit.log")
            .run(application: tenant.apps["legacy-daemon"]!, bundlePath: c.dir + "/reboot2.json", force: true, reason: "test", operator: "t")
        #expect(daemon.maximumCertificateValidity == 200 * day)
    }

    func adoption(_ c: Central, provisioner: Provisioner? = nil, hook: SideEffectHook = .none) throws -> Adoption {
        Adoption(provisioner: provisioner ?? c.provisioner, auditLogPath: c.dir + "/audit.log", log: try ProvisionLog(path: c.dir + "/adopt.log", hook: hook),
                 bundleDir: c.dir + "/bundles", reason: "bring legacy apps under rolling", operator: "ops", hook: hook)
    }

    func targets(_ c: Central) async throws -> [Adoption.Target] {
        try await Adoption.resolve([.namePrefix("legacy-")], in: c.provisioner.graph).map {
            Adoption.Target(application: $0, replicas: $0.displayName == "legacy-daemon" ? 2 : nil)
        }
    }

    func outcomes(_ r: Adoption.Report) -> [String: Adoption.Outcome] {
        var out: [String: Adoption.Outcome] = [:]
        for e in r.entries {
            #expect(e.failure == nil, "\(e.target.name): \(e.failure ?? "")")
            out[e.target.name] = e.outcome
        }
        return out
    }

    /// The issue's scenario: a tenant of legacy apps adopted in bulk on the virtual clock.
    @Test func aTenantOfLegacyAppsIsAdoptedInBulk() async throws {
        let c = try Central()
        let rig = c.rig
        let tenant = try await LegacyTenant(c, foreign: try rig.credential("partner-integration", days: 365))
        var before: [String: Application] = [:]
        for name in tenant.apps.keys { before[name] = try await tenant.read(name) }

        // the plan changes nothing
        let planned = try await adoption(c).plan(try await targets(c))
        #expect(planned.count == 5)
        for e in planned {
            if e.target.name == "legacy-symmetric" { if case .refuse? = e.decision {} else { Issue.record("the symmetric app was not refused in the plan") } }
            else if case .adopt(let w)? = e.decision { #expect(w.needsMark && !w.toIssue.isEmpty) } else { Issue.record("\(e.target.name): \(String(describing: e.decision)) \(e.failure ?? "")") }
        }
        for name in tenant.apps.keys {
            let now = try await tenant.read(name)
            #expect(now == before[name], "the plan changed \(name)")
        }

        let report = try await adoption(c).execute(try await targets(c))
        let o = outcomes(report)
        #expect(report.refused == 1 && report.failed == 0)
        guard case .refused(_, let why)? = o["legacy-symmetric"] else { Issue.record("the symmetric app was not refused"); return }
        #expect(why.contains("symmetric key"), "\(why)")
        let symmetric = try await tenant.read("legacy-symmetric")
        #expect(symmetric == before["legacy-symmetric"], "nothing is done to a refused app")

        for name in ["legacy-daemon", "legacy-web", "legacy-partner", "legacy-short"] {
            guard case .adopted(_, let bundles, [], let lifetimes, _)? = o[name] else { Issue.record("\(name): \(String(describing: o[name]))"); continue }
            let after = try await tenant.read(name)
            let was = before[name]!
            #expect(Set(after.tags ?? []) == Set((was.tags ?? []) + [Provisioner.managedTag, Provisioner.adoptedTag]), "\(name): \(after.tags ?? [])")
            #expect(after.passwordCredentials == was.passwordCredentials, "\(name): its secrets changed")
            // every key it had is there exactly as it was, plus one bootstrap per host
            let keysBefore = was.keyCredentials ?? [], keysAfter = after.keyCredentials ?? []
            for k in keysBefore { #expect(keysAfter.contains(k), "\(name): \(k.displayName ?? k.keyId) changed or vanished") }
            let bootstraps = keysAfter.filter { CredentialName.parse(displayName: $0.displayName).isBootstrap }
            #expect(keysAfter.count == keysBefore.count + bootstraps.count && bootstraps.count == (name == "legacy-daemon" ? 2 : 1))
            #expect(bundles.count == bootstraps.count)
            let limit = name == "legacy-short" ? 30 * day : 200 * day
            #expect(lifetimes?.contains(name == "legacy-short" ? LegacyTenant.shortLimit : LegacyTenant.defaultLimit) == true, "\(name): \(lifetimes ?? "")")
            for path in bundles {
                let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! Int
                #expect(mode == 0o600)
                let b = try BootstrapBundle.decode(try SecureFiles.read(path))
                #expect(b.maximumCertificateValidity == limit && b.appId == after.appId)
                let cert = try b.signingCredential().certificate
                #expect(bootstraps.contains { $0.keyId == b.bootstrap.keyId && $0.matches(cert) }, "\(path) holds a key Graph does not list")
                #expect(cert.notAfter.timeIntervalSince(cert.notBefore) <= limit)
            }
            let sp = try await c.provisioner.graph.servicePrincipal(appId: after.appId)
            #expect(sp != nil, "\(name) has no service principal")
        }
        // the audit trail: intent, then outcome, with the lifetimes and where they came from
        let trail = JSONLinesFile.lines(at: c.dir + "/audit.log").compactMap { try? JSONValue.parse(Array($0)) }
        #expect(trail.count == 8 && trail.allSatisfy { $0["action"] == "adopt" && $0["operator"] == "ops" })
        #expect(trail.filter { $0["phase"] == "completed" }.count == 4)
        #expect(trail.contains { $0["app"] == "legacy-short" && $0["lifetimesFrom"]?.stringValue?.contains("thirty days") == true })

        // the short-lived app's bundle imports, and its agent rolls on the virtual clock inside the policy
        rig.clock.advance(by: 600)
        let short = try await tenant.read("legacy-short")
        guard case .adopted(_, let shortBundles, _, _, _)? = o["legacy-short"], let shortPath = shortBundles.first else { Issue.record("no bundle"); return }
        let shortBundle = try BootstrapBundle.decode(try SecureFiles.read(shortPath))
        // Entra (the emulator) refuses a certificate over the policy through addKey
        let bootstrapCred = try shortBundle.signingCredential()
        let appToken = try await rig.token(clientID: short.appId, credential: bootstrapCred)
        let tooLong = try rig.credential("keyroll-too-long", days: 60)
        let refused = await rig.graph("POST", "/v1.0/applications/\(short.id)/addKey", token: appToken,
                                      json: try rig.addKeyBody(tooLong.certificate, signer: bootstrapCred, objectID: short.id))
        #expect(refused.status == 400 && refused.json?["error"]?["code"]?.stringValue == "CredentialInvalidLifetimeAsPerAppPolicy", "\(refused.status)")
        let store = CredentialStore(path: c.dir + "/stores/legacy-short")
        try Roller.importBundle(shortBundle, into: store, now: rig.clock.now())
        #expect(try store.identity().maximumCertificateValidity == 30 * day)
        let roller = try Roller(store: store, transport: InProcessTransport(emulator: rig.emulator, baseURL: rig.base), clock: rig.clock,
                                sleeper: ClockAdvancingSleeper(clock: rig.clock))
        #expect(roller.policy.effectiveValidity == 30 * day)
        guard case .rolled(let thumbprint) = try await roller.rollIfDue() else { Issue.record("the agent did not roll"); return }
        let rolled = try store.credential(thumbprint).certificate
        #expect(rolled.notAfter.timeIntervalSince(rolled.notBefore) <= 30 * day)
        let shortKeys = try rig.emulator.keyCredentials(appId: short.appId)
        #expect(shortKeys.contains { $0.sha1 == rolled.sha1Thumbprint } && !shortKeys.contains { $0.displayName == "CN=keyroll-bootstrap" })
        #expect(shortKeys.count == (before["legacy-short"]!.keyCredentials ?? []).count + 1)

        // adopting again changes nothing: no write, no new bootstrap, nothing new in the audit trail
        var afterFirst: [String: Application] = [:]
        for name in tenant.apps.keys { afterFirst[name] = try await tenant.read(name) }
        let again = outcomes(try await adoption(c).execute(try await targets(c)))
        for (name, outcome) in again where name != "legacy-symmetric" {
            guard case .unchanged = outcome else { Issue.record("\(name) was not left alone: \(outcome)"); continue }
        }
        for name in tenant.apps.keys {
            let now = try await tenant.read(name)
            #expect(now == afterFirst[name], "the second run changed \(name)")
        }
        #expect(JSONLinesFile.lines(at: c.dir + "/audit.log").count == 8)

        // a provisioned app is skipped; raising the replicas issues only the new host's bundle
        let provisioned = try await c.provisioner.provision(name: "legacy-provisioned")
        let more = try await Adoption.resolve([.app("legacy-provisioned"), .app("legacy-daemon")], in: c.provisioner.graph)
        let third = outcomes(try await adoption(c).execute(more.map { Adoption.Target(application: $0, replicas: $0.id == provisioned.application.id ? nil : 3) }))
        guard case .alreadyManaged? = third["legacy-provisioned"] else { Issue.record("\(String(describing: third["legacy-provisioned"]))"); return }
        guard case .adopted(_, let newBundles, let kept, _, _)? = third["legacy-daemon"] else { Issue.record("\(String(describing: third["legacy-daemon"]))"); return }
        #expect(newBundles.count == 1 && newBundles[0].hasSuffix(".r3.json") && kept == [ReplicaName.numbered(1), .numbered(2)])
    }

    @Test func withoutPolicyReadAllAdoptRefusesUnlessTheOperatorSaysTheLimit() async throws {
        let c = try Central()  // Application.ReadWrite.All only
        let app = try await c.provisioner.graph.createApplication(displayName: "legacy-x")
        let target = [Adoption.Target(application: app)]
        guard case .refused(_, let why)? = try await adoption(c).execute(target).entries.first?.outcome else { Issue.record("not refused"); return }
        #expect(why.contains("Policy.Read.All") && why.contains("--max-certificate-days"), "\(why)")
        #expect(try c.rig.emulator.keyCredentials(appId: app.appId).isEmpty)
        var a = try adoption(c)
        a.operatorMaximumCertificateValidity = 90 * day
        guard case .adopted(_, let bundles, _, let source, _)? = await a.execute(target).entries.first?.outcome else { Issue.record("not adopted"); return }
        #expect(source?.contains("--max-certificate-days 90") == true)
        #expect(try BootstrapBundle.decode(try SecureFiles.read(bundles[0])).maximumCertificateValidity == 90 * day)
    }
}

/// Names every side effect a run reaches with the run's random ids made stable (the appId in a
/// bundle's name), and fails the one named `target`: the step a crash would stop at.
final class AdoptFaultPoints: @unchecked Sendable {
    let lock = NSLock()
    var seen: [String] = []
    var target: String?
    let stable: @Sendable (String) -> String

    init(stable: @escaping @Sendable (String) -> String) { self.stable = stable }

    func reach(_ e: SideEffect) throws {
        let name = lock.withLock { () -> String in
            let d = stable(e.description)
            let n = seen.filter { $0.hasPrefix(d + "#") }.count + 1
            seen.append("\(d)#\(n)")
            return "\(d)#\(n)"
        }
        if name == target { throw SecureFileError.io(path: "(test fault)", operation: e.kind.rawValue, errno: ENOSPC) }
    }
}

@Suite struct AdoptionCrashTests {
    /// One legacy app with secrets and a partner's certificate, on two hosts; adopt fails at each
    /// of its side effects in turn — every file-system call of the audit trail, the run log and
    /// the bundles, and every Graph request before it is sent and after its answer arrived — and
    /// the next run finishes the job: the app ends adopted once, with exactly one bootstrap per
    /// replica (the one in that replica's bundle), no orphan, its secrets and certificate as they were.
    @Test func adoptFailingAtEverySideEffectIsFinishedByTheNextRun() async throws {
        let partner = try SigningCredential.generate(subject: .init(commonName: "partner"), notBefore: EmulatorRig.start.addingTimeInterval(-300),
                                                     notAfter: EmulatorRig.start.addingTimeInterval(365 * day))
        func fresh() async throws -> (Central, Application, Application) {
            let c = try Central()
            try c.rig.emulator.grant([.applicationReadWriteAll, .policyReadAll], toAppId: c.provisioner.graph.tokens.clientID)
            let graph = c.provisioner.graph
            let app = try await graph.createApplication(displayName: "legacy-crash", tags: ["team:legacy"])
            let entry: JSONValue = .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(partner.certificate.der))])
            try await graph.updateApplication(id: app.id, ["keyCredentials": .array([entry])])
            let token = try await c.rig.token(clientID: graph.tokens.clientID, credential: c.cred)
            let r = await c.rig.graph("POST", "/v1.0/applications/\(app.id)/addPassword", token: token, json: .object(["passwordCredential": .object(["displayName": "old"])]))
            guard r.status == 200 else { throw ToolError("addPassword: \(r.status)") }
            let before = try await graph.application(id: app.id, select: ["id", "appId", "displayName", "tags", "keyCredentials", "passwordCredentials"])
            return (c, app, before)
        }
        func run(_ c: Central, _ app: Application, points: AdoptFaultPoints?) async throws -> Adoption.Report {
            let hook = points.map { p in SideEffectHook { try p.reach($0) } } ?? .none
            let clients = LabClients(emulator: c.rig.emulator, base: c.rig.base, tenantID: c.rig.tenant.id)
            let graph = GraphClient.signingIn(as: c.provisioner.graph.tokens.clientID, with: .certificate(c.cred), endpoints: clients.endpoints,
                                              transport: SideEffectTransport(clients.transport, hook: hook), clock: clients.clock, sleeper: clients.sleeper,
                                              retry: RetryPolicy(maxAttempts: 30))
            let a = Adoption(provisioner: Provisioner(graph: graph, clock: clients.clock), auditLogPath: c.dir + "/audit.log",
                             log: try ProvisionLog(path: c.dir + "/adopt.log", hook: hook), bundleDir: c.dir + "/bundles", reason: "crash drill",
                             operator: "ops", hook: hook)
            return await a.execute([Adoption.Target(application: app, replicas: 2)])
        }
        let (ref, refApp, _) = try await fresh()
        let refAppId = refApp.appId
        let reference = AdoptFaultPoints { $0.replacingOccurrences(of: refAppId, with: "APPID") }
        let first = try await run(ref, refApp, points: reference)
        guard case .adopted? = first.entries.first?.outcome else { Issue.record("the reference run did not adopt: \(first.entries.first?.failure ?? "")"); return }
        let points = reference.seen
        #expect(points.contains("rename legacy-crash.APPID.r2.json#1") && points.contains("write adopt.log#1") && points.contains("answered patch#1"), "\(points)")
        var stopped = 0, ran = 0
        let slice = CISlice.rotating(3, fullWhen: "KEYROLL_CRASH_POINTS")
        for (i, point) in points.enumerated() where slice.includes(i) {
            ran += 1
            let (c, app, before) = try await fresh()
            let appId = app.appId
            let faulty = AdoptFaultPoints { $0.replacingOccurrences(of: appId, with: "APPID") }
            faulty.target = point
            var failed = false
            do {
                let r = try await run(c, app, points: faulty)
                if case .adopted? = r.entries.first?.outcome {} else { failed = true }
            } catch { failed = true }  // e.g. the run log cannot be opened
            if failed { stopped += 1 }
            c.rig.clock.advance(by: 16 * 60)  // a dead run's lease on the app expires
            let again = try await run(c, app, points: nil)
            switch again.entries.first?.outcome {
            case .adopted?, .unchanged?: break
            default: Issue.record("\(point): the next run did not finish: \(String(describing: again.entries.first?.outcome)) \(again.entries.first?.failure ?? "")"); continue
            }
            let after = try await c.provisioner.graph.application(id: app.id, select: ["id", "appId", "displayName", "tags", "keyCredentials", "passwordCredentials"])
            #expect(after.passwordCredentials == before.passwordCredentials, "\(point): the secret changed")
            let keys = after.keyCredentials ?? []
            for k in before.keyCredentials ?? [] { #expect(keys.contains(k), "\(point): the partner's certificate changed") }
            #expect(keys.count == 3, "\(point): \(keys.compactMap(\.displayName))")
            for r in 1...2 {
                let path = c.dir + "/bundles/legacy-crash.\(appId).r\(r).json"
                let bundle = try BootstrapBundle.decode(try SecureFiles.read(path))
                let der = try bundle.signingCredential().certificate.der
                let mine = keys.filter { $0.displayName == "CN=keyroll-bootstrap@r\(r)" }
                #expect(mine.count == 1 && mine.first.map { Base64.decode($0.key ?? "") == der } == true, "\(point): r\(r)'s registered key is not the one in its bundle")
            }
            let tags = after.tags ?? []
            #expect(tags.filter { $0 == Provisioner.managedTag }.count == 1 && tags.filter { $0 == Provisioner.adoptedTag }.count == 1 && tags.contains("team:legacy"),
                    "\(point): \(tags)")
            // a run stopped while releasing its lease leaves the tag, expired (it is harmless, and the
            // next privileged write sweeps it); no live lease may be left behind
            let live = tags.compactMap(AppLease.parse).filter { $0.expires > c.rig.clock.now() }
            #expect(live.isEmpty, "\(point): a live lease was left behind: \(tags)")
        }
        print("adopt crash points: \(points.count), \(ran) failed at, \(stopped) stopped the run" + slice.note(ran: ran, of: points.count, variable: "KEYROLL_CRASH_POINTS"))
        #expect(stopped > ran / 2, "most side effects must be able to stop the run")
    }
}
