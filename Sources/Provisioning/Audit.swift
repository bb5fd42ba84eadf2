import EntraClient
import EntraCrypto
import Foundation

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
}

public struct AppAudit: Codable, Sendable, Equatable {
    public var name: String
    public var appId: String
    public var objectId: String
    public var managed: Bool
    public var credentials: [CredentialAudit]
    public var conditions: [AppCondition]
    /// Latest end of a currently valid certificate: after it, self-service rolling is impossible.
    public var cliff: Date?
    public var worst: AppCondition { conditions.max() ?? .healthy }
}

public struct FleetAudit: Codable, Sendable {
    public var generatedAt: Date
    public var expiringWithinDays: Double
    public var apps: [AppAudit]

    public var counts: [AppCondition: Int] {
        var c: [AppCondition: Int] = [:]
        for a in apps { c[a.worst, default: 0] += 1 }
        return c
    }
    public var worst: AppCondition { apps.map(\.worst).max() ?? .healthy }
    public var exitCode: Int32 { Int32(worst.severity) }
}

/// Classification rules (pure).
public enum AuditRules {
    /// Certificates KeyRoll makes are named `CN=keyroll-…`; the provisioner's bootstrap is `CN=keyroll-bootstrap`.
    public static func classify(_ app: Application, now: Date, expiringWithin: TimeInterval) -> AppAudit {
        let managed = app.tags?.contains(Provisioner.managedTag) ?? false
        var creds: [CredentialAudit] = []
        for k in app.keyCredentials ?? [] {
            let name = k.displayName ?? ""
            let finding: CredentialFinding
            if let end = k.endDateTime, end < now { finding = .expiredLeftover }
            else if let start = k.startDateTime, start > now { finding = .notYetValid }
            else if !managed { finding = .unmanaged }
            else if name == Provisioner.bootstrapDisplayName { finding = .bootstrapNotRolled }
            else if name.hasPrefix("CN=keyroll-") {
                finding = (k.endDateTime.map { $0.timeIntervalSince(now) } ?? 0) < expiringWithin ? .expiringSoon : .healthy
            } else { finding = .drift }
            creds.append(CredentialAudit(keyId: k.keyId, kind: k.type ?? "?", displayName: k.displayName, start: k.startDateTime, end: k.endDateTime, finding: finding))
        }
        for p in app.passwordCredentials ?? [] {
            let expired = (p.endDateTime ?? .distantFuture) < now
            creds.append(CredentialAudit(keyId: p.keyId, kind: "Password", displayName: p.displayName, start: p.startDateTime, end: p.endDateTime,
                                         finding: expired ? .expiredLeftover : (managed ? .drift : .unmanaged)))
        }
        let validCerts = (app.keyCredentials ?? []).filter { $0.isValidCertificate(at: now) }
        let cliff = validCerts.compactMap(\.endDateTime).max()
        var conditions = Set<AppCondition>()
        if !managed { conditions.insert(.unmanaged) }
        if managed && validCerts.isEmpty { conditions.insert(.pastCliff) }
        for c in creds {
            switch c.finding {
            case .drift: conditions.insert(.drift)
            case .bootstrapNotRolled: conditions.insert(.bootstrapNotRolled)
            case .expiringSoon: conditions.insert(.expiringSoon)
            case .expiredLeftover: conditions.insert(.leftovers)
            case .healthy, .notYetValid, .unmanaged: break
            }
        }
        if managed, let cliff, cliff.timeIntervalSince(now) < expiringWithin { conditions.insert(.expiringSoon) }
        if conditions.isEmpty { conditions.insert(.healthy) }
        return AppAudit(name: app.displayName ?? app.appId, appId: app.appId, objectId: app.id, managed: managed,
                        credentials: creds, conditions: conditions.sorted(by: >), cliff: cliff)
    }
}

/// Scans the tenant: every application, paged, selecting only what the rules need (one
/// `$select=keyCredentials` request per page of 999, far below the 150/min cap).
public struct Auditor: Sendable {
    public let graph: GraphClient
    public init(graph: GraphClient) { self.graph = graph }

    public func scan(now: Date, expiringWithinDays: Double, managedOnly: Bool = false) async throws -> FleetAudit {
        var apps: [AppAudit] = []
        let filter = managedOnly ? OData.hasTag(Provisioner.managedTag) : nil
        for try await app in graph.applications(filter: filter, select: ["id", "appId", "displayName", "tags", "keyCredentials", "passwordCredentials"], pageSize: 999) {
            apps.append(AuditRules.classify(app, now: now, expiringWithin: expiringWithinDays * 86_400))
        }
        apps.sort { ($0.worst, $1.name) > ($1.worst, $0.name) }
        return FleetAudit(generatedAt: now, expiringWithinDays: expiringWithinDays, apps: apps)
    }
}
