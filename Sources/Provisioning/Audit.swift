import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives

/// What the audit says about one credential.
public enum CredentialFinding: String, Codable, Sendable, CaseIterable {
    case healthy
    case bootstrapNotRolled = "bootstrap-not-rolled"
    case expiringSoon = "expiring-soon"
    case expiredLeftover = "expired-leftover"
    case notYetValid = "not-yet-valid"
    /// Not created by KeyRoll on a KeyRoll-managed app: drift, or an attacker's persistence.
    case drift
    /// On an application KeyRoll does not manage.
    case unmanaged
    /// A credential KeyRoll did not make, on an app KeyRoll adopted (a client secret, a certificate
    /// from elsewhere): the app had it before, so it is the migration's to retire on evidence
    /// (`keyroll secrets retire` for secrets), not drift. Drift on an adopted app is therefore
    /// seen only by comparing with the adoption's audit record.
    case legacy
}

/// An application's overall state, worst first in `severity`.
public enum AppCondition: String, Codable, Sendable, CaseIterable, Comparable {
    case healthy
    case unmanaged
    case leftovers
    case expiringSoon = "expiring-soon"
    case bootstrapNotRolled = "bootstrap-not-rolled"
    case drift
    case pastCliff = "past-cliff"

    /// Exit code contribution (the worst finding wins).
    public var severity: Int {
        switch self {
        case .healthy, .unmanaged: return 0
        case .leftovers, .expiringSoon: return 1
        case .bootstrapNotRolled: return 2
        case .drift: return 3
        case .pastCliff: return 4
        }
    }

    public static func < (a: AppCondition, b: AppCondition) -> Bool {
        (a.severity, allCases.firstIndex(of: a)!) < (b.severity, allCases.firstIndex(of: b)!)
    }
}

public struct CredentialAudit: Codable, Sendable, Equatable {
    public var keyId: String
    public var kind: String
    public var displayName: String?
    public var start: Date?
    public var end: Date?
    public var finding: CredentialFinding
    /// Where a KeyRoll key's private key lives, as its agent declared it in the key's name:
    /// `pkcs11` (generated in a token, non-extractable) or `file`; nil for other credentials.
    /// A declaration by the app's own agent, not a hardware attestation.
    public var keyStore: String?
}

public struct AppAudit: Codable, Sendable, Equatable {
    public var name: String
    public var appId: String
    public var objectId: String
    public var managed: Bool
    /// KeyRoll adopted it (tag `keyroll:adopted`): an existing app brought under management.
    public var adopted: Bool = false
    public var credentials: [CredentialAudit]
    /// The app's state, from its live replicas (a stale replica does not make it unhealthy; it
    /// has its own row, with the command that retires it).
    public var conditions: [AppCondition]
    /// Latest end of a currently valid certificate: after it, self-service rolling is impossible.
    public var cliff: Date?
    /// One row per replica, for an app that runs on several hosts (empty for a single-host app).
    public var replicas: [ReplicaAudit]
    public init(name: String, appId: String, objectId: String, managed: Bool, credentials: [CredentialAudit], conditions: [AppCondition],
                cliff: Date?, replicas: [ReplicaAudit]) {
        self.name = name
        self.appId = appId
        self.objectId = objectId
        self.managed = managed
        self.credentials = credentials
        self.conditions = conditions
        self.cliff = cliff
        self.replicas = replicas
    }

    public var worst: AppCondition { conditions.max() ?? .healthy }
    public var staleReplicas: [ReplicaAudit] { replicas.filter { $0.condition == .stale } }
}

/// What the audit says about one replica of an app.
public enum ReplicaCondition: String, Codable, Sendable, CaseIterable {
    case healthy
    case bootstrapNotRolled = "bootstrap-not-rolled"
    case expiringSoon = "expiring-soon"
    /// It has not rolled within its expected window (or holds no valid key): its host is probably gone.
    case stale
}

public struct ReplicaAudit: Codable, Sendable, Equatable {
    public var replica: ReplicaName
    public var condition: ReplicaCondition
    public var keyIds: [String]
    /// Latest end of this replica's valid certificates (nil: none is valid).
    public var cliff: Date?
    /// Start of its newest own (rolled) key: when it last rolled.
    public var lastRolledAt: Date?
    /// By when it should have rolled again (nil while it still runs on its bootstrap).
    public var rollOverdueAt: Date?
    /// For a stale replica, the exact command that retires it.
    public var retireCommand: String?
}

public struct FleetAudit: Codable, Sendable {
    public var generatedAt: Date
    public var expiringWithinDays: Double
    public var apps: [AppAudit]

    public init(generatedAt: Date, expiringWithinDays: Double, apps: [AppAudit]) {
        self.generatedAt = generatedAt
        self.expiringWithinDays = expiringWithinDays
        self.apps = apps
    }

    public var counts: [AppCondition: Int] {
        var c: [AppCondition: Int] = [:]
        for a in apps { c[a.worst, default: 0] += 1 }
        return c
    }
    public var worst: AppCondition { apps.map(\.worst).max() ?? .healthy }
    /// Replicas that stopped rolling, across the fleet (each a warning: retire it, or re-bootstrap its host).
    public var staleReplicas: Int { apps.reduce(0) { $0 + $1.staleReplicas.count } }
    public var exitCode: Int32 { Int32(max(worst.severity, staleReplicas > 0 ? 1 : 0)) }
}

/// Classification rules (pure).
public enum AuditRules {
    /// Certificates KeyRoll makes are named `CN=keyroll-…`; the provisioner's bootstrap is `CN=keyroll-bootstrap`.
    /// A replica whose newest own key has lived past this fraction of its lifetime has missed its
    /// roll: agents roll at 2/3 of the lifetime ± 5% jitter (at the latest at 0.717).
    public static let defaultStaleAfterFraction = 0.75

    public static func classify(_ app: Application, now: Date, expiringWithin: TimeInterval,
                                staleAfterFraction: Double = defaultStaleAfterFraction) -> AppAudit {
        let managed = app.tags?.contains(Provisioner.managedTag) ?? false
        let adopted = app.tags?.contains(Provisioner.adoptedTag) ?? false
        let replicas = managed ? replicaAudits(app, now: now, expiringWithin: expiringWithin, staleAfterFraction: staleAfterFraction) : []
        let staleKeys = Set(replicas.filter { $0.condition == .stale }.flatMap(\.keyIds))
        var creds: [CredentialAudit] = []
        var live: [CredentialAudit] = []
        for k in app.keyCredentials ?? [] {
            let marker = CredentialName.parse(displayName: k.displayName)
            let finding: CredentialFinding
            if let end = k.endDateTime, end < now { finding = .expiredLeftover }
            else if let start = k.startDateTime, start > now { finding = .notYetValid }
            else if !managed { finding = .unmanaged }
            else if marker.isBootstrap { finding = .bootstrapNotRolled }
            else if marker.isKeyRoll {
                finding = (k.endDateTime.map { $0.timeIntervalSince(now) } ?? 0) < expiringWithin ? .expiringSoon : .healthy
            } else { finding = adopted ? .legacy : .drift }
            let audit = CredentialAudit(keyId: k.keyId, kind: k.type ?? "?", displayName: k.displayName, start: k.startDateTime, end: k.endDateTime, finding: finding,
                                        keyStore: marker.isKeyRoll ? (marker.inToken ? "pkcs11" : "file") : nil)
            creds.append(audit)
            if !staleKeys.contains(k.keyId) || finding == .drift { live.append(audit) }
        }
        for p in app.passwordCredentials ?? [] {
            let expired = (p.endDateTime ?? .distantFuture) < now
            // a secret on an adopted app was there before KeyRoll: the migration retires it on evidence
            let live: CredentialFinding = managed ? (adopted ? .legacy : .drift) : .unmanaged
            creds.append(CredentialAudit(keyId: p.keyId, kind: "Password", displayName: p.displayName, start: p.startDateTime, end: p.endDateTime,
                                         finding: expired ? .expiredLeftover : live))
        }
        let validCerts = (app.keyCredentials ?? []).filter { $0.isValidCertificate(at: now) }
        let cliff = validCerts.compactMap(\.endDateTime).max()
        var conditions = Set<AppCondition>()
        if !managed { conditions.insert(.unmanaged) }
        if managed && validCerts.isEmpty { conditions.insert(.pastCliff) }
        for c in live + creds.filter({ $0.kind == "Password" }) {
            switch c.finding {
            case .drift: conditions.insert(.drift)
            case .bootstrapNotRolled: conditions.insert(.bootstrapNotRolled)
            case .expiringSoon: conditions.insert(.expiringSoon)
            case .expiredLeftover: conditions.insert(.leftovers)
            case .healthy, .notYetValid, .unmanaged, .legacy: break
            }
        }
        if managed, let cliff, cliff.timeIntervalSince(now) < expiringWithin { conditions.insert(.expiringSoon) }
        if conditions.isEmpty { conditions.insert(.healthy) }
        var audit = AppAudit(name: app.displayName ?? app.appId, appId: app.appId, objectId: app.id, managed: managed,
                             credentials: creds, conditions: conditions.sorted(by: >), cliff: cliff, replicas: replicas)
        audit.adopted = adopted
        return audit
    }

    /// One row per replica marker found on the app's keys (``CredentialName``); none when no key
    /// carries a marker. A replica is
    /// - `stale` when it holds no valid key, or its newest own key has lived past
    ///   `staleAfterFraction` of its lifetime (it should have rolled);
    /// - `bootstrap-not-rolled` when its only valid key is its bootstrap;
    /// - `expiring-soon` when its last valid key ends within `expiringWithin`;
    /// - `healthy` otherwise.
    public static func replicaAudits(_ app: Application, now: Date, expiringWithin: TimeInterval,
                                     staleAfterFraction: Double = defaultStaleAfterFraction) -> [ReplicaAudit] {
        var byReplica: [ReplicaName: [KeyCredential]] = [:]
        for k in app.keyCredentials ?? [] {
            let marker = CredentialName.parse(displayName: k.displayName)
            if marker.isKeyRoll, let r = marker.replica { byReplica[r, default: []].append(k) }
        }
        return byReplica.keys.sorted().map { r in
            let keys = byReplica[r]!
            let valid = keys.filter { $0.isValidCertificate(at: now) }
            let own = valid.filter { !CredentialName.parse(displayName: $0.displayName).isBootstrap }
            let newest = own.max { ($0.startDateTime ?? .distantPast) < ($1.startDateTime ?? .distantPast) }
            let cliff = valid.compactMap(\.endDateTime).max()
            var overdue: Date?
            if let n = newest, let s = n.startDateTime, let e = n.endDateTime { overdue = s.addingTimeInterval(e.timeIntervalSince(s) * staleAfterFraction) }
            let condition: ReplicaCondition
            if valid.isEmpty { condition = .stale }
            else if let overdue, overdue < now { condition = .stale }
            else if own.isEmpty { condition = .bootstrapNotRolled }
            else if let cliff, cliff.timeIntervalSince(now) < expiringWithin { condition = .expiringSoon }
            else { condition = .healthy }
            let retire = condition == .stale
                ? "keyroll retire --app \(app.appId) --replica \(r.rawValue) --reason \"host gone: not rolled since \(newest?.startDateTime.map(UTCTime.iso) ?? "its bootstrap")\""
                : nil
            return ReplicaAudit(replica: r, condition: condition, keyIds: keys.map(\.keyId), cliff: cliff, lastRolledAt: newest?.startDateTime,
                                rollOverdueAt: overdue, retireCommand: retire)
        }
    }
}

/// Scans the tenant: every application, paged, selecting only what the rules need (one
/// `$select=keyCredentials` request per page of 999, far below the 150/min cap).
public struct Auditor: Sendable {
    public let graph: GraphClient
    public init(graph: GraphClient) { self.graph = graph }

    public func scan(now: Date, expiringWithinDays: Double, managedOnly: Bool = false,
                     staleAfterFraction: Double = AuditRules.defaultStaleAfterFraction) async throws -> FleetAudit {
        var apps: [AppAudit] = []
        let filter = managedOnly ? OData.hasTag(Provisioner.managedTag) : nil
        for try await app in graph.applications(filter: filter, select: ["id", "appId", "displayName", "tags", "keyCredentials", "passwordCredentials"], pageSize: 999) {
            apps.append(AuditRules.classify(app, now: now, expiringWithin: expiringWithinDays * 86_400, staleAfterFraction: staleAfterFraction))
        }
        apps.sort { ($0.worst, $1.name) > ($1.worst, $0.name) }
        return FleetAudit(generatedAt: now, expiringWithinDays: expiringWithinDays, apps: apps)
    }
}
