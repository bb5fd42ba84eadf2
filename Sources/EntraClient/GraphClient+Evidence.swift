import Foundation
import KeyRollPrimitives

/// A client secret's text, as `addPassword` returns it once. It never prints: `description`,
/// `debugDescription` and string interpolation show `[redacted]`, and it is not `Codable`, so no
/// log line, error or JSON report can carry it by accident. Read it deliberately with ``reveal``.
public struct SecretText: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    private let value: String
    public init(_ value: String) { self.value = value }
    /// The secret itself: for the one place that hands it to the app (a test's token request).
    public var reveal: String { value }
    public var description: String { "[redacted]" }
    public var debugDescription: String { "[redacted]" }
}

/// A password credential just created by `addPassword`, with its text (Graph shows it only in this answer).
public struct NewPasswordCredential: Sendable {
    public var credential: PasswordCredential
    public var secretText: SecretText
}

/// One delegated (user) sign-in by an app, from the beta sign-in log: a user signed in to the app,
/// or the app redeemed a user's code or refresh token (`interactiveUser` / `nonInteractiveUser`).
/// Such use of a client secret is not keyed to the credential in the log (Graph documents
/// `servicePrincipalCredentialKeyId` for service-principal sign-ins only).
public struct DelegatedSignIn: Sendable, Codable, Equatable {
    public var id: String
    public var createdDateTime: Date
    public var appId: String
    public var userPrincipalName: String?
    public var userId: String?
    public var status: ServicePrincipalSignIn.Status?
    public var signInEventTypes: [String]?
    public var clientCredentialType: String?
    public var isInteractive: Bool?

    public init(id: String, createdDateTime: Date, appId: String, userPrincipalName: String? = nil, userId: String? = nil,
                status: ServicePrincipalSignIn.Status? = nil, signInEventTypes: [String]? = nil, clientCredentialType: String? = nil,
                isInteractive: Bool? = nil) {
        self.id = id
        self.createdDateTime = createdDateTime
        self.appId = appId
        self.userPrincipalName = userPrincipalName
        self.userId = userId
        self.status = status
        self.signInEventTypes = signInEventTypes
        self.clientCredentialType = clientCredentialType
        self.isInteractive = isInteractive
    }
}

/// One row of Graph's beta `appCredentialSignInActivities` report: a credential and the newest
/// successful sign-in with it "across all flows". Read leniently, because Microsoft's own examples
/// disagree with the schema: `expirationDate` for `expirationDateTime`, `keyType` `secret` for
/// `clientSecret`, offsets such as `-8:00`. ``keyType`` is normalised to `clientSecret`,
/// `certificate`, or the value as sent. A date that cannot be read is nil, never a failed report.
public struct AppCredentialSignInActivity: Sendable, Codable, Equatable {
    public var id: String?
    public var appId: String
    public var appObjectId: String?
    public var servicePrincipalObjectId: String?
    public var resourceId: String?
    public var keyId: String
    public var keyType: String?
    public var keyUsage: String?
    /// `application` or `servicePrincipal`.
    public var credentialOrigin: String?
    public var createdDateTime: Date?
    public var expirationDateTime: Date?
    public var lastSignInDateTime: Date?
    public var lastSignInRequestId: String?

    public init(id: String? = nil, appId: String, appObjectId: String? = nil, servicePrincipalObjectId: String? = nil, resourceId: String? = nil,
                keyId: String, keyType: String? = nil, keyUsage: String? = nil, credentialOrigin: String? = nil, createdDateTime: Date? = nil,
                expirationDateTime: Date? = nil, lastSignInDateTime: Date? = nil, lastSignInRequestId: String? = nil) {
        self.id = id
        self.appId = appId
        self.appObjectId = appObjectId
        self.servicePrincipalObjectId = servicePrincipalObjectId
        self.resourceId = resourceId
        self.keyId = keyId
        self.keyType = keyType
        self.keyUsage = keyUsage
        self.credentialOrigin = credentialOrigin
        self.createdDateTime = createdDateTime
        self.expirationDateTime = expirationDateTime
        self.lastSignInDateTime = lastSignInDateTime
        self.lastSignInRequestId = lastSignInRequestId
    }

    /// A report row from Graph's JSON; nil when it names no appId or keyId.
    public static func parse(_ row: JSONValue) -> AppCredentialSignInActivity? {
        guard let appId = row["appId"]?.stringValue, let keyId = row["keyId"]?.stringValue else { return nil }
        func date(_ v: JSONValue?) -> Date? { v?.stringValue.flatMap(lenientDate) }
        var type = row["keyType"]?.stringValue
        if let t = type?.lowercased(), t == "secret" || t == "clientsecret" || t == "password" { type = "clientSecret" }
        if type?.lowercased() == "certificate" { type = "certificate" }
        return AppCredentialSignInActivity(
            id: row["id"]?.stringValue, appId: appId, appObjectId: row["appObjectId"]?.stringValue,
            servicePrincipalObjectId: row["servicePrincipalObjectId"]?.stringValue, resourceId: row["resourceId"]?.stringValue,
            keyId: keyId, keyType: type, keyUsage: row["keyUsage"]?.stringValue, credentialOrigin: row["credentialOrigin"]?.stringValue,
            createdDateTime: date(row["createdDateTime"]), expirationDateTime: date(row["expirationDateTime"]) ?? date(row["expirationDate"]),
            lastSignInDateTime: date(row["signInActivity"]?["lastSignInDateTime"]),
            lastSignInRequestId: row["signInActivity"]?["lastSignInRequestId"]?.stringValue)
    }

    /// ISO 8601, also with a one-digit hour offset (`2021-04-01T21:36:48-8:00`, as in Microsoft's examples).
    static func lenientDate(_ s: String) -> Date? {
        if let d = UTCTime.parseISO(s) { return d }
        let u = Array(s)
        guard u.count >= 5, u[u.count - 3] == ":", u[u.count - 5] == "+" || u[u.count - 5] == "-" else { return nil }
        return UTCTime.parseISO(String(u[..<(u.count - 4)]) + "0" + String(u[(u.count - 4)...]))
    }
}

extension PasswordCredential {
    /// A password credential as Graph lists it (for tests and pure rules; Graph makes real ones).
    public init(keyId: String, displayName: String? = nil, start: Date?, end: Date?, hint: String? = nil) {
        self.init(keyId: keyId, displayName: displayName, startDateTime: start, endDateTime: end, hint: hint)
    }
}

extension EntraError {
    /// Graph refused to show the sign-in log or a usage report because the tenant has no Entra ID
    /// P1/P2 licence (`403 Authentication_RequestFromNonPremiumTenantOrB2CTenant`, "Neither tenant
    /// is B2C or tenant doesn't have premium license"; also seen now and then on licensed tenants).
    public var isMissingLicence: Bool {
        kind == .forbidden && (graphCode == "Authentication_RequestFromNonPremiumTenantOrB2CTenant" || message.lowercased().contains("premium license"))
    }

    /// The caller lacks the permission (`AuditLog.Read.All` for the log and the reports).
    public var isMissingPermission: Bool { kind == .forbidden && !isMissingLicence }
}

extension GraphClient {
    // MARK: client secrets

    /// `addPassword`: a new client secret on application `objectID`, generated by Graph, whose text
    /// is in this answer only. For tests and demonstrations: KeyRoll itself never adds a secret.
    /// Not re-sent after an ambiguous failure (a second attempt would leave a secret nobody holds):
    /// the error says to look for the displayName on the app.
    public func addPassword(objectID: String, displayName: String, endDateTime: Date? = nil) async throws -> NewPasswordCredential {
        var pc: [String: JSONValue] = ["displayName": .string(displayName)]
        if let endDateTime { pc["endDateTime"] = .string(UTCTime.iso(endDateTime)) }
        let answer = try await call("addPassword", "POST", "/applications/\(objectID)/addPassword", body: .object(["passwordCredential": .object(pc)]), recover: {
            throw EntraError(kind: .transient, operation: "addPassword",
                             message: "the answer to addPassword was lost: a secret named '\(displayName)' may exist whose text nobody has; remove it (removePassword) before trying again")
        })
        guard let text = answer["secretText"]?.stringValue else {
            throw EntraError(kind: .protocolViolation, operation: "addPassword", message: "Graph's answer has no secretText")
        }
        var shown = answer.objectValue ?? [:]
        shown["secretText"] = nil
        let credential: PasswordCredential = try decode(.object(shown))
        return NewPasswordCredential(credential: credential, secretText: SecretText(text))
    }

    /// `removePassword`: removes the client secret `keyId` from application `objectID` (no proof
    /// is needed, unlike `removeKey`). Returns true when Graph removed it, false when Graph says the
    /// application has no such secret (400 "No credentials found to be removed"): after a lost
    /// answer, or a run that removed it before. A retry after an ambiguous failure first reads the
    /// application: a secret already gone is the outcome asked for.
    @discardableResult
    public func removePassword(objectID: String, keyId: String) async throws -> Bool {
        let recover: @Sendable () async throws -> JSONValue? = {
            let app = try await self.application(id: objectID, select: ["id", "passwordCredentials"])
            return (app.passwordCredentials ?? []).contains { $0.keyId.lowercased() == keyId.lowercased() } ? nil : .null
        }
        do {
            _ = try await call("removePassword", "POST", "/applications/\(objectID)/removePassword", body: .object(["keyId": .string(keyId)]), recover: recover)
            return true
        } catch let e as EntraError where e.kind == .badRequest && (e.message.contains("No credentials found") || e.message.contains("No password credential")) {
            logger.info("removePassword: the secret is already gone", metadata: ["keyId": "\(keyId)"])
            return false
        }
    }

    // MARK: sign-in log

    /// Every entry of the beta sign-in log matching `clauses` (joined by `and`), newest first,
    /// following `@odata.nextLink` on the same origin only.
    func signInLog<T: Decodable>(_ clauses: [String], pageSize: Int = 1000) async throws -> [T] {
        let items = [("$filter", clauses.joined(separator: " and ")), ("$top", String(max(1, min(pageSize, 1000))))]
        var next: String? = Self.betaBaseURL(endpoints.graphBaseURL) + "/auditLogs/signIns?"
            + items.map { "\($0.0)=\(Self.encodeQuery($0.1))" }.joined(separator: "&")
        var out: [T] = []
        while let url = next {
            let page = try await call("listSignIns", "GET", url)
            for item in page["value"]?.arrayValue ?? [] { out.append(try decode(item)) }
            next = page["@odata.nextLink"]?.stringValue
            if let link = next, !SecureURL.sameOrigin(link, endpoints.graphBaseURL) {
                throw EntraError(kind: .protocolViolation, operation: "listSignIns",
                                 message: "Graph's @odata.nextLink points to another origin (\(Redaction.url(link))); refusing to send the bearer token there")
            }
        }
        return out
    }

    /// The `createdDateTime` clauses of a window, in whole seconds widened outward.
    static func windowClauses(since: Date, until: Date?) -> [String] {
        var c = ["createdDateTime ge \(UTCTime.iso(Date(timeIntervalSince1970: since.timeIntervalSince1970.rounded(.down))))"]
        if let until { c.append("createdDateTime le \(UTCTime.iso(Date(timeIntervalSince1970: until.timeIntervalSince1970.rounded(.up))))") }
        return c
    }

    /// Every app's service-principal sign-ins from `since` (to `until`), newest first: one paged
    /// query for the whole tenant, cheaper than one per app when many apps are read (Graph's
    /// reporting budget is 5 requests per 10 s per app and tenant). Needs `AuditLog.Read.All`.
    public func servicePrincipalSignIns(since: Date, until: Date? = nil, pageSize: Int = 1000) async throws -> [ServicePrincipalSignIn] {
        try await signInLog(["signInEventTypes/any(t: t eq 'servicePrincipal')"] + Self.windowClauses(since: since, until: until), pageSize: pageSize)
    }

    /// The delegated (user) sign-ins of app `appId` — or of every app when nil — from `since` (to
    /// `until`), newest first: event types `interactiveUser` and `nonInteractiveUser`. A confidential
    /// client that redeems users' codes with a secret uses it here, without any app-only sign-in.
    public func delegatedSignIns(appId: String?, since: Date, until: Date? = nil, pageSize: Int = 1000) async throws -> [DelegatedSignIn] {
        var clauses = ["signInEventTypes/any(t: t eq 'interactiveUser' or t eq 'nonInteractiveUser')"]
        if let appId { clauses.append("appId eq \(OData.quote(appId))") }
        return try await signInLog(clauses + Self.windowClauses(since: since, until: until), pageSize: pageSize)
    }

    // MARK: usage report

    /// Graph's beta `appCredentialSignInActivities` report, for app `appId` or (nil) the whole
    /// tenant, every page. Needs `AuditLog.Read.All` and, by Microsoft's docs, Entra ID P1/P2; its
    /// freshness is not documented (expect a day). Rows without an appId or keyId are skipped.
    public func appCredentialSignInActivities(appId: String? = nil) async throws -> [AppCredentialSignInActivity] {
        var next: String? = Self.betaBaseURL(endpoints.graphBaseURL) + "/reports/appCredentialSignInActivities"
            + (appId.map { "?$filter=" + Self.encodeQuery("appId eq \(OData.quote($0))") } ?? "")
        var out: [AppCredentialSignInActivity] = []
        while let url = next {
            let page = try await call("listAppCredentialSignInActivities", "GET", url)
            out += (page["value"]?.arrayValue ?? []).compactMap(AppCredentialSignInActivity.parse)
            next = page["@odata.nextLink"]?.stringValue
            if let link = next, !SecureURL.sameOrigin(link, endpoints.graphBaseURL) {
                throw EntraError(kind: .protocolViolation, operation: "listAppCredentialSignInActivities",
                                 message: "Graph's @odata.nextLink points to another origin (\(Redaction.url(link))); refusing to send the bearer token there")
            }
        }
        return out
    }
}
