import EntraCrypto
import Foundation
import GRDB
import KeyRollPrimitives

/// What Entra cannot do, for tests: create tenants and privileged apps directly, move the clock,
/// read the sign-in log. The same operations are served over HTTP under `/_emulator/`.
extension EntraEmulator {
    /// The well-known development tenant seeded by `keyroll-lab emulator` (like Azurite's account).
    public static let devTenantID = "00000000-0000-4000-8000-00000000c0de"
    public static let devTenantDomain = "keyroll-dev.onmicrosoft.com"

    /// An application registered through the administration API.
    public struct Registration: Sendable, Equatable {
        public let tenantID: String
        public let objectID: String
        public let appId: String
        public let servicePrincipalID: String
    }

    @discardableResult
    public func createTenant(domain: String, id: String? = nil, displayName: String? = nil) throws -> Tenant {
        let t = Tenant(id: (id ?? UUID().uuidString).lowercased(), domain: domain, displayName: displayName ?? domain)
        try store.createTenant(t)
        return t
    }

    /// Registers an application and its service principal, grants `roles` on Graph, and adds
    /// `certificates` (active immediately, no propagation delay) and an optional client `secret`.
    @discardableResult
    public func register(tenantID: String, displayName: String, roles: Set<GraphRole> = [], certificates: [X509Certificate] = [],
                         secret: String? = nil, tags: [String] = []) throws -> Registration {
        let now = self.now
        guard let tenant = try store.tenant(tenantID) else { throw GraphError.notFound(tenantID) }
        let keys = certificates.map { Self.seededKey($0, now: now) }
        let passwords = secret.map { s in
            [StoredPasswordCredential(keyId: UUID().uuidString.lowercased(), secretHash: Thumbprint.sha256(of: Array(s.utf8)).bytes,
                                      hint: String(s.prefix(3)), displayName: "seeded", startDateTime: now.addingTimeInterval(-60),
                                      endDateTime: now.addingTimeInterval(10 * 365 * 86_400))]
        } ?? []
        let app = StoredApplication(id: UUID().uuidString.lowercased(), appId: UUID().uuidString.lowercased(), tenantID: tenant.id,
                                    displayName: displayName, signInAudience: "AzureADMyOrg", createdDateTime: now,
                                    extra: tags.isEmpty ? [:] : ["tags": .array(tags.map(JSONValue.string))],
                                    keyCredentials: keys, passwordCredentials: passwords, owners: [])
        let sp = StoredServicePrincipal(id: UUID().uuidString.lowercased(), appId: app.appId, tenantID: tenant.id, displayName: displayName,
                                        createdDateTime: now, keyCredentials: [], roles: roles, extra: [:])
        try store.write { db in
            try DirectoryStore.insert(db, application: app)
            try DirectoryStore.insert(db, servicePrincipal: sp)
        }
        return Registration(tenantID: tenant.id, objectID: app.id, appId: app.appId, servicePrincipalID: sp.id)
    }

    /// Sets the Graph application permissions granted to an app's service principal.
    public func grant(_ roles: Set<GraphRole>, toAppId appId: String) throws {
        try store.write { db in
            guard let app = try DirectoryStore.application(db, appId: appId),
                  let sp = try DirectoryStore.servicePrincipal(db, tenantID: app.tenantID, appId: appId) else { throw GraphError.notFound(appId) }
            try DirectoryStore.setRoles(db, spID: sp.id, roles)
        }
    }

    /// Records a successful delegated sign-in: `userPrincipalName` signed in to the app, as Entra logs
    /// a user's sign-in (the emulator has no user login flow). `interactive` makes it an
    /// `interactiveUser` sign-in, else a `nonInteractiveUser` one (a refresh token, on-behalf-of, …).
    /// `credentialKeyId` names the application's secret or certificate a confidential client redeemed
    /// the code with (nil: a public client). The sign-in happens `at` (the emulator's clock by
    /// default); the log's retention and latency and the reports' latency apply as to app-only ones.
    @discardableResult
    public func recordDelegatedSignIn(appId: String, userPrincipalName: String, interactive: Bool = true, credentialKeyId: String? = nil,
                                      resource: String? = "https://graph.microsoft.com", at time: Date? = nil) throws -> SignInEvent {
        guard let app = try store.application(appId: appId) else { throw GraphError.notFound(appId) }
        let keyId = credentialKeyId?.lowercased()
        var credential: (type: String, thumbprint: String?) = ("none", nil)
        if let keyId {
            if app.passwordCredentials.contains(where: { $0.keyId.lowercased() == keyId }) {
                credential = ("secret", nil)
            } else if let key = app.keyCredentials.first(where: { $0.keyId.lowercased() == keyId }) {
                credential = ("certificate", key.sha1.hex)
            } else {
                throw GraphError.badRequest("The application \(app.appId) has no credential with keyId '\(keyId)'.")
            }
        }
        let event = SignInEvent(sequence: 0, time: time ?? now, tenantID: app.tenantID, appId: app.appId, keyId: keyId,
                                thumbprint: credential.thumbprint, result: "success", errorCode: nil, credentialType: credential.type,
                                id: UUID().uuidString.lowercased(), appDisplayName: app.displayName, resource: resource,
                                eventType: interactive ? .interactiveUser : .nonInteractiveUser, userPrincipalName: userPrincipalName,
                                userId: Self.userId(tenantID: app.tenantID, userPrincipalName: userPrincipalName))
        try store.logSignIn(event)
        return event
    }

    /// The object id the emulator gives a user it has only a name for: a GUID derived from the tenant
    /// and the user principal name (case-insensitively), so one user keeps one id.
    static func userId(tenantID: String, userPrincipalName: String) -> String {
        let h = Array(Thumbprint.sha256(of: Array("\(tenantID)|\(userPrincipalName.lowercased())".utf8)).hex.lowercased())
        func part(_ r: Range<Int>) -> String { String(h[r]) }
        return "\(part(0..<8))-\(part(8..<12))-8\(part(13..<16))-a\(part(17..<20))-\(part(20..<32))"
    }

    /// Replaces a tenant's default app management policy (what `PATCH /policies/defaultAppManagementPolicy` changes).
    public func setDefaultAppManagementPolicy(_ policy: TenantAppManagementPolicy, tenantID: String) throws {
        guard let tenant = try store.tenant(tenantID) else { throw GraphError.notFound(tenantID) }
        try store.write { try DirectoryStore.setTenantAppManagementPolicy($0, tenantID: tenant.id, policy) }
    }

    /// A tenant's default app management policy as stored.
    public func defaultAppManagementPolicy(tenantID: String) throws -> TenantAppManagementPolicy {
        guard let tenant = try store.tenant(tenantID) else { throw GraphError.notFound(tenantID) }
        return try store.read { try DirectoryStore.tenantAppManagementPolicy($0, tenantID: tenant.id) }
    }

    /// Stores `policy` in the application's tenant (replacing the policy with its id) and assigns it to
    /// the application, in place of any policy assigned before.
    public func assignAppManagementPolicy(_ policy: AppManagementPolicy, toAppId appId: String) throws {
        try store.write { db in
            guard let app = try DirectoryStore.application(db, appId: appId) else { throw GraphError.notFound(appId) }
            try DirectoryStore.saveAppManagementPolicy(db, tenantID: app.tenantID, policy)
            try DirectoryStore.assignAppManagementPolicy(db, policyID: policy.id, to: app.id)
        }
    }

    /// The app management policy assigned to an application, if any.
    public func assignedAppManagementPolicy(appId: String) throws -> AppManagementPolicy? {
        try store.read { db in
            guard let app = try DirectoryStore.application(db, appId: appId) else { throw GraphError.notFound(appId) }
            return try DirectoryStore.assignedAppManagementPolicy(db, ownerID: app.id)
        }
    }

    static func seededKey(_ cert: X509Certificate, now: Date) -> StoredKeyCredential {
        StoredKeyCredential(keyId: UUID().uuidString.lowercased(), key: cert.der, customKeyIdentifier: cert.sha1Thumbprint.bytes,
                            displayName: "CN=" + cert.subject, startDateTime: cert.notBefore, endDateTime: cert.notAfter,
                            type: "AsymmetricX509Cert", usage: "Verify", activeAt: now)
    }

    /// Replaces a service principal's key credentials with `certificates` (test setup).
    public func setServicePrincipalKeys(spID: String, certificates: [X509Certificate]) throws {
        let now = self.now
        try store.write { try DirectoryStore.replaceKeyCredentials($0, owner: spID, certificates.map { Self.seededKey($0, now: now) }) }
    }

    /// A service principal's key credentials as stored, for assertions in tests.
    public func servicePrincipalKeys(spID: String) throws -> [StoredKeyCredential] {
        try store.read { try DirectoryStore.servicePrincipal($0, id: spID)?.keyCredentials ?? [] }
    }

    /// Creates `count` applications named `{prefix}{n}` (n from `start`), each with a service
    /// principal and `tags`, in write transactions of 5,000: how a big tenant is loaded for tests and
    /// benchmarks (thousands of apps per second; `keyroll-lab emulator --seed-apps N`). No keys.
    public func seedApplications(tenantID: String, count: Int, prefix: String = "seed-", start: Int = 0, tags: [String] = []) throws {
        let now = self.now
        var n = start
        while n < start + count {
            let end = min(start + count, n + 5000)
            try store.write { db in
                for i in n..<end {
                    let app = StoredApplication(id: UUID().uuidString.lowercased(), appId: UUID().uuidString.lowercased(), tenantID: tenantID,
                                                displayName: "\(prefix)\(i)", signInAudience: "AzureADMyOrg", createdDateTime: now,
                                                extra: tags.isEmpty ? [:] : ["tags": .array(tags.map(JSONValue.string))],
                                                keyCredentials: [], passwordCredentials: [], owners: [])
                    try DirectoryStore.insert(db, application: app)
                    try DirectoryStore.insert(db, servicePrincipal: StoredServicePrincipal(id: UUID().uuidString.lowercased(), appId: app.appId, tenantID: tenantID,
                                                                                          displayName: app.displayName, createdDateTime: now, keyCredentials: [],
                                                                                          roles: [], extra: [:]))
                }
            }
            n = end
        }
    }

    /// What ``seedFleet(tenantID:count:seed:)`` made: how many apps of each kind.
    public struct SeededFleet: Sendable, Equatable {
        public var healthy = 0, bootstrapNotRolled = 0, expiringSoon = 0, pastCliff = 0, drift = 0, replicated = 0, staleReplicas = 0
    }

    /// Creates `count` KeyRoll-managed applications (`fleet-00001` …) whose certificates look like a
    /// fleet's a while after rollout: most rolled by their agents (`CN=keyroll-{appId}`, started up to
    /// 8 months ago), some still on their bootstrap, some expiring within 90 days, some past their
    /// cliff, some with a foreign credential, and some running as 3 replicas (now and then one of
    /// them stale). Seeded, so the same seed gives the same fleet. The keyCredentials share one
    /// certificate's bytes (no key generation: 10,000 apps load in seconds); their dates and names
    /// are what the audit reads. For the fleet report's tests and screenshots.
    @discardableResult
    public func seedFleet(tenantID: String, count: Int, seed: UInt64 = 1) throws -> SeededFleet {
        let now = self.now
        let cert = try SigningCredential.generate(subject: .init(commonName: "keyroll-seed"), notBefore: now.addingTimeInterval(-800 * 86_400),
                                                  notAfter: now.addingTimeInterval(800 * 86_400)).certificate
        var rng = SplitMix64(seed: seed)
        var made = SeededFleet()
        let day: TimeInterval = 86_400
        func key(_ name: String, start: TimeInterval, end: TimeInterval) -> StoredKeyCredential {
            StoredKeyCredential(keyId: UUID().uuidString.lowercased(), key: cert.der, customKeyIdentifier: cert.sha1Thumbprint.bytes, displayName: name,
                                startDateTime: now.addingTimeInterval(start), endDateTime: now.addingTimeInterval(end),
                                type: "AsymmetricX509Cert", usage: "Verify", activeAt: now)
        }
        var n = 0
        while n < count {
            let end = min(count, n + 2000)
            try store.write { db in
                for i in n..<end {
                    let appId = UUID().uuidString.lowercased()
                    let name = String(format: "fleet-%05d", i + 1)
                    let own = "CN=keyroll-\(appId)"
                    let roll = rng.unit()
                    var keys: [StoredKeyCredential]
                    switch roll {
                    case ..<0.03:
                        made.bootstrapNotRolled += 1
                        let age = rng.unit() * 1.5 * day
                        keys = [key("CN=keyroll-bootstrap", start: -age, end: 2 * day - age)]
                    case ..<0.10:
                        made.expiringSoon += 1
                        let left = (1 + rng.unit() * 89) * day
                        keys = [key(own, start: left - 365 * day, end: left)]
                    case ..<0.115:
                        made.pastCliff += 1
                        let gone = (1 + rng.unit() * 60) * day
                        keys = [key(own, start: -gone - 365 * day, end: -gone)]
                    case ..<0.125:
                        made.drift += 1
                        let start = -rng.unit() * 240 * day
                        keys = [key(own, start: start, end: start + 365 * day), key("CN=deploy-pipeline", start: -30 * day, end: 700 * day)]
                    case ..<0.175:
                        made.replicated += 1
                        keys = (1...3).map { r in
                            let start = -rng.unit() * 240 * day
                            return key(own + "@r\(r)", start: start, end: start + 365 * day)
                        }
                        if rng.unit() < 0.2 {
                            made.staleReplicas += 1
                            keys[2] = key(own + "@r3", start: -320 * day, end: 45 * day)
                        }
                    default:
                        made.healthy += 1
                        let start = -rng.unit() * 240 * day
                        keys = [key(own, start: start, end: start + 365 * day)]
                    }
                    let app = StoredApplication(id: UUID().uuidString.lowercased(), appId: appId, tenantID: tenantID, displayName: name,
                                                signInAudience: "AzureADMyOrg", createdDateTime: now,
                                                extra: ["tags": .array([.string("keyroll:managed"), .string("keyroll:app:" + name)])],
                                                keyCredentials: keys, passwordCredentials: [], owners: [])
                    try DirectoryStore.insert(db, application: app)
                }
            }
            n = end
        }
        return made
    }

    /// SQLite's plans for the statements the store runs to answer `GET /applications?$filter=…`
    /// (one per clause, with its index lookup) and to create an application: tests prove from them
    /// that no lookup scans the tenant.
    public func applicationLookupPlans(tenantID: String, filter: String) throws -> [(sql: String, plan: String)] {
        let parsed = try ODataFilter(parsing: filter, resource: "microsoft.graph.application")
        return try store.read { db in
            var statements: [(String, StatementArguments)] = [(DirectoryStore.nextApplicationSeqSQL, [])]
            statements += parsed.clauses.compactMap { DirectoryStore.candidateQuery(tenantID: tenantID, clause: $0, after: 0) }
            return try statements.map { sql, args in
                (sql, try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: args).map { $0["detail"] as String }.joined(separator: "\n"))
            }
        }
    }

    /// Every application of a tenant as stored, for assertions in tests.
    public func applications(tenantID: String) throws -> [StoredApplication] {
        try store.read { db in try DirectoryStore.applications(db, tenantID: tenantID, after: 0, limit: Int.max).map(\.app) }
    }

    /// The app's key credentials as stored (with certificates), for assertions in tests.
    public func keyCredentials(appId: String) throws -> [StoredKeyCredential] {
        try store.application(appId: appId)?.keyCredentials ?? []
    }

    /// Seeds the development tenant and a provisioner app with Application.ReadWrite.All (and
    /// AuditLog.Read.All, which `keyroll retire` and `keyroll audit` read the sign-in log with, and
    /// Policy.Read.All and Policy.ReadWrite.ApplicationConfiguration, to read and try out app
    /// management policies) and a certificate valid for `validity`; returns its registration and
    /// credential. Idempotent for the tenant; each call makes a fresh provisioner.
    public func seedDevelopmentTenant(provisionerName: String = "keyroll-provisioner", validity: TimeInterval = 365 * 86_400) throws
        -> (registration: Registration, credential: SigningCredential)
    {
        if try store.tenant(Self.devTenantID) == nil {
            try createTenant(domain: Self.devTenantDomain, id: Self.devTenantID, displayName: "KeyRoll development tenant")
        }
        let now = self.now
        let cred = try SigningCredential.generate(subject: .init(commonName: provisionerName), notBefore: now.addingTimeInterval(-300),
                                                  notAfter: now.addingTimeInterval(validity))
        let reg = try register(tenantID: Self.devTenantID, displayName: provisionerName, roles: [.applicationReadWriteAll, .auditLogReadAll, .policyReadAll, .policyReadWriteApplicationConfiguration],
                               certificates: [cred.certificate])
        return (reg, cred)
    }
}
