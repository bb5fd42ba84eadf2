import Foundation
import KeyRollPrimitives

/// One app-only (service-principal) sign-in from Graph's beta sign-in log
/// (`GET /beta/auditLogs/signIns`): which credential an app presented, and whether Entra accepted it.
///
/// `clientCredentialType` is kept as Graph's string: `clientAssertion` or `certificate` for a
/// certificate, `clientSecret` for a secret, `federatedIdentityCredential`, `managedIdentity`, `none`,
/// or a member added later. `servicePrincipalCredentialKeyId` is the `keyId` of the key or password
/// credential used; a failed sign-in may carry none.
public struct ServicePrincipalSignIn: Sendable, Codable, Equatable {
    public struct Status: Sendable, Codable, Equatable {
        /// 0 for a success, else the AADSTS code (e.g. 7000215).
        public var errorCode: Int?
        public var failureReason: String?

        public init(errorCode: Int? = nil, failureReason: String? = nil) {
            self.errorCode = errorCode
            self.failureReason = failureReason
        }
    }

    public var id: String
    public var createdDateTime: Date
    public var appId: String
    public var appDisplayName: String?
    public var servicePrincipalId: String?
    public var servicePrincipalName: String?
    public var resourceId: String?
    public var resourceDisplayName: String?
    public var ipAddress: String?
    public var status: Status?
    public var signInEventTypes: [String]?
    public var clientCredentialType: String?
    public var servicePrincipalCredentialKeyId: String?
    public var servicePrincipalCredentialThumbprint: String?
    public var isInteractive: Bool?

    public init(id: String, createdDateTime: Date, appId: String, appDisplayName: String? = nil, servicePrincipalId: String? = nil,
                servicePrincipalName: String? = nil, resourceId: String? = nil, resourceDisplayName: String? = nil, ipAddress: String? = nil,
                status: Status? = nil, signInEventTypes: [String]? = nil, clientCredentialType: String? = nil,
                servicePrincipalCredentialKeyId: String? = nil, servicePrincipalCredentialThumbprint: String? = nil, isInteractive: Bool? = nil) {
        self.id = id
        self.createdDateTime = createdDateTime
        self.appId = appId
        self.appDisplayName = appDisplayName
        self.servicePrincipalId = servicePrincipalId
        self.servicePrincipalName = servicePrincipalName
        self.resourceId = resourceId
        self.resourceDisplayName = resourceDisplayName
        self.ipAddress = ipAddress
        self.status = status
        self.signInEventTypes = signInEventTypes
        self.clientCredentialType = clientCredentialType
        self.servicePrincipalCredentialKeyId = servicePrincipalCredentialKeyId
        self.servicePrincipalCredentialThumbprint = servicePrincipalCredentialThumbprint
        self.isInteractive = isInteractive
    }

    /// Entra accepted the credential: `status.errorCode` is 0 (an entry without a status is not
    /// counted as a success: it can prove nothing).
    public var succeeded: Bool { status?.errorCode == 0 }

    /// The app signed in with a secret.
    public var usedSecret: Bool { clientCredentialType == "clientSecret" }

    /// The app signed in with a certificate (a client assertion).
    public var usedCertificate: Bool { clientCredentialType == "clientAssertion" || clientCredentialType == "certificate" }
}

extension GraphClient {
    /// Graph's beta endpoint beside `graphBaseURL`: its version segment (`v1.0` or `beta`) replaced by
    /// `beta`, or `/beta` appended when it has none (`https://graph.microsoft.com/v1.0` →
    /// `https://graph.microsoft.com/beta`). The sign-in log's service-principal events, their
    /// credential fields and the usage reports exist on beta only.
    public static func betaBaseURL(_ graphBaseURL: String) -> String {
        var base = graphBaseURL
        while base.hasSuffix("/") { base.removeLast() }
        if let slash = base.lastIndex(of: "/"), ["v1.0", "beta"].contains(base[base.index(after: slash)...].lowercased()),
           base[..<slash].hasSuffix("/") == false, base[..<slash].contains("://") {
            base = String(base[..<slash])
        }
        return base + "/beta"
    }

    /// The app's service-principal sign-ins from `since` (and up to `until`), optionally only those
    /// that presented the credential `credentialKeyId`, newest first, following `@odata.nextLink`.
    ///
    /// Reads `GET /beta/auditLogs/signIns` with `signInEventTypes/any(t: t eq 'servicePrincipal')`
    /// (without it Graph lists interactive user sign-ins only) and needs `AuditLog.Read.All`. The log
    /// keeps 30 days (7 without a P1/P2 licence) and shows a sign-in minutes to hours after it
    /// happened; an app that reuses a cached token signs in once per token. Dates in the filter are
    /// whole seconds, widened outward (`since` down, `until` up).
    public func servicePrincipalSignIns(appId: String, since: Date, until: Date? = nil, credentialKeyId: String? = nil,
                                        pageSize: Int = 1000) async throws -> [ServicePrincipalSignIn] {
        var clauses = ["signInEventTypes/any(t: t eq 'servicePrincipal')", "appId eq \(OData.quote(appId))",
                       "createdDateTime ge \(UTCTime.iso(since))"]
        if let until { clauses.append("createdDateTime le \(UTCTime.iso(Date(timeIntervalSince1970: until.timeIntervalSince1970.rounded(.up))))") }
        if let credentialKeyId { clauses.append("servicePrincipalCredentialKeyId eq \(OData.quote(credentialKeyId))") }
        return try await signInLog(clauses, pageSize: pageSize)
    }
}
