import EntraClient
import Foundation
import KeyRollPrimitives

/// Gathers the evidence of credential use from Graph: the beta sign-in log (primary) and the
/// `appCredentialSignInActivities` report (second source), and turns a refusal to show them into
/// the reason a verdict is unknown (no permission, no licence, unreadable).
///
/// Graph's reporting budget is 5 requests per 10 s per app and tenant, so a few apps are read one
/// query each (`appId eq …`), and more than ``perAppQueryLimit`` by one paged query over the whole
/// tenant's service-principal sign-ins.
public struct EvidenceCollector: Sendable {
    public let graph: GraphClient
    public var windowDays: Int
    public var retentionDays: Double
    public var perAppQueryLimit = 10

    public init(graph: GraphClient, windowDays: Int = SecretRetirementRules.defaultWindowDays, retentionDays: Double = 30) {
        self.graph = graph
        self.windowDays = windowDays
        self.retentionDays = retentionDays
    }

    /// What was read: the sign-ins of the apps asked about (the whole log the retention shows), and
    /// the report rows (empty when the report could not be read: it is the second source).
    public struct Collected: Sendable {
        public var signIns: LogRead<ServicePrincipalSignIn>
        public var report: [AppCredentialSignInActivity]
        public var reportFailure: UnknownReason?
    }

    /// Why the log (or the report) could not be read, from the error Graph's answer became.
    public static func reason(for error: any Error) -> UnknownReason {
        guard let e = error as? EntraError else { return .unreadable }
        if e.isMissingLicence { return .noLicence }
        if e.isMissingPermission { return .noPermission }
        return .unreadable
    }

    public func collect(appIds: [String], now: Date) async -> Collected {
        let since = now.addingTimeInterval(-retentionDays * EvidenceRules.day)
        let perApp = appIds.count <= perAppQueryLimit
        let wanted = Set(appIds.map { $0.lowercased() })
        var signIns: LogRead<ServicePrincipalSignIn>
        do {
            if perApp {
                var all: [ServicePrincipalSignIn] = []
                for appId in appIds { all += try await graph.servicePrincipalSignIns(appId: appId, since: since, until: now) }
                signIns = .read(all)
            } else {
                signIns = .read(try await graph.servicePrincipalSignIns(since: since, until: now).filter { wanted.contains($0.appId.lowercased()) })
            }
        } catch {
            signIns = .unreadable(Self.reason(for: error))
        }
        var report: [AppCredentialSignInActivity] = []
        var reportFailure: UnknownReason?
        do {
            if perApp {
                for appId in appIds { report += try await graph.appCredentialSignInActivities(appId: appId) }
            } else {
                report = try await graph.appCredentialSignInActivities().filter { wanted.contains($0.appId.lowercased()) }
            }
        } catch {
            report = []
            reportFailure = Self.reason(for: error)
        }
        return Collected(signIns: signIns, report: report, reportFailure: reportFailure)
    }

    /// Every credential of `apps` with its verdict.
    public func usage(for apps: [Application], now: Date) async -> [CredentialUsage] {
        guard !apps.isEmpty else { return [] }
        let c = await collect(appIds: apps.map(\.appId), now: now)
        return apps.flatMap { EvidenceRules.usage($0, signIns: c.signIns, report: c.report, now: now, windowDays: windowDays, retentionDays: retentionDays) }
    }

    /// The per-credential view of the audited apps (the audit's listing, not read again).
    public func view(for audit: FleetAudit) async -> CredentialReport.View {
        let apps = audit.apps.map(Self.application)
        let now = audit.generatedAt
        var credentials: [CredentialUsage] = []
        var reportFailure: UnknownReason?
        if !apps.isEmpty {
            let c = await collect(appIds: apps.map(\.appId), now: now)
            reportFailure = c.reportFailure
            credentials = apps.flatMap {
                EvidenceRules.usage($0, signIns: c.signIns, report: c.report, now: now, windowDays: windowDays, retentionDays: retentionDays)
            }
        }
        return CredentialReport.View(generatedAt: now, windowDays: windowDays, retentionDays: retentionDays, reportUnavailable: reportFailure,
                                     credentials: credentials)
    }

    /// The application an audit row was made from, as far as the evidence rules need it.
    static func application(_ a: AppAudit) -> Application {
        let keys = a.credentials.filter { $0.kind != "Password" }.map {
            KeyCredential(keyId: $0.keyId, displayName: $0.displayName, startDateTime: $0.start, endDateTime: $0.end, type: $0.kind)
        }
        let secrets = a.credentials.filter { $0.kind == "Password" }.map {
            PasswordCredential(keyId: $0.keyId, displayName: $0.displayName, start: $0.start, end: $0.end)
        }
        return Application(id: a.objectId, appId: a.appId, displayName: a.name, keyCredentials: keys, passwordCredentials: secrets)
    }
}
