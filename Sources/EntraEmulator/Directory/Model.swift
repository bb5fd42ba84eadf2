import EntraCrypto
import Foundation
import KeyRollPrimitives

/// A directory tenant: a GUID and its initial domain (`contoso.onmicrosoft.com`).
public struct Tenant: Sendable, Equatable {
    public let id: String
    public let domain: String
    public let displayName: String
}

/// The Microsoft Graph application permissions the emulator models, with Graph's real app-role ids.
public enum GraphRole: String, Sendable, CaseIterable, Codable {
    case applicationReadWriteAll = "Application.ReadWrite.All"
    case applicationReadWriteOwnedBy = "Application.ReadWrite.OwnedBy"
    case applicationReadAll = "Application.Read.All"
    case directoryReadWriteAll = "Directory.ReadWrite.All"
    /// Reads the sign-in log (`/beta/auditLogs/signIns`) and the usage reports under `/beta/reports`.
    case auditLogReadAll = "AuditLog.Read.All"
    /// Reads app management policies (`/policies/defaultAppManagementPolicy`, `/policies/appManagementPolicies`).
    case policyReadAll = "Policy.Read.All"
    /// Reads and writes app management policies (and, with Application.Read.All, assigns them).
    case policyReadWriteApplicationConfiguration = "Policy.ReadWrite.ApplicationConfiguration"

    public var appRoleID: String {
        switch self {
        case .applicationReadWriteAll: return "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"
        case .applicationReadWriteOwnedBy: return "18a4783c-866b-4cc7-a460-3d5e5662c884"
        case .applicationReadAll: return "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30"
        case .directoryReadWriteAll: return "19dbc75e-c2e2-444c-a770-ec69d8559fc7"
        case .auditLogReadAll: return "b0afded3-3588-46d8-8b3d-9842eff778da"
        case .policyReadAll: return "246dd0d5-5bd0-4def-940b-0421030a5b68"
        case .policyReadWriteApplicationConfiguration: return "be74164b-cff1-491c-8741-e671cb536e13"
        }
    }
}

/// A certificate or symmetric key credential as stored on an application or service principal.
public struct StoredKeyCredential: Sendable, Equatable {
    public var keyId: String
    /// The DER the client uploaded (for `AsymmetricX509Cert` a certificate).
    public var key: [UInt8]
    public var customKeyIdentifier: [UInt8]?
    public var displayName: String?
    public var startDateTime: Date
    public var endDateTime: Date
    public var type: String
    public var usage: String
    /// When the token endpoint starts accepting it (propagation delay).
    public var activeAt: Date

    /// SHA-1 / SHA-256 of `key`, as Entra matches `x5t` / `x5t#S256`.
    public var sha1: Thumbprint { .sha1(of: key) }
    public var sha256: Thumbprint { .sha256(of: key) }

    /// Valid for the token endpoint and for proofs at `now`: a verify certificate inside its window.
    public func isUsableCertificate(at now: Date) -> Bool {
        type == "AsymmetricX509Cert" && usage == "Verify" && startDateTime <= now && now <= endDateTime
    }
}

/// A client secret. Only a SHA-256 of the secret is kept, plus Graph's three-character hint.
public struct StoredPasswordCredential: Sendable, Equatable {
    public var keyId: String
    public var secretHash: [UInt8]
    public var hint: String
    public var displayName: String?
    public var startDateTime: Date
    public var endDateTime: Date
}

/// An app registration.
public struct StoredApplication: Sendable, Equatable {
    public var id: String
    public var appId: String
    public var tenantID: String
    public var displayName: String
    public var signInAudience: String
    public var createdDateTime: Date
    /// Every other property a client set (tags, notes, identifierUris, …), kept as sent.
    public var extra: [String: JSONValue]
    public var keyCredentials: [StoredKeyCredential]
    public var passwordCredentials: [StoredPasswordCredential]
    /// Object ids of owning service principals (for Application.ReadWrite.OwnedBy).
    public var owners: [String]
}

/// A service principal (enterprise application): the app's identity in a tenant.
public struct StoredServicePrincipal: Sendable, Equatable {
    public var id: String
    public var appId: String
    public var tenantID: String
    public var displayName: String
    public var createdDateTime: Date
    public var keyCredentials: [StoredKeyCredential]
    public var roles: Set<GraphRole>
    public var extra: [String: JSONValue]
}

/// Graph's `signInEventType` of a logged sign-in.
public enum SignInEventType: String, Sendable, CaseIterable {
    /// App-only: a token request of the emulator's token endpoint.
    case servicePrincipal
    /// Delegated: a user signed in to the app (recorded with ``EntraEmulator/recordDelegatedSignIn(appId:userPrincipalName:interactive:credentialKeyId:resource:at:)``).
    case interactiveUser
    /// Delegated without the user at hand: a refresh-token redemption, on-behalf-of, …
    case nonInteractiveUser
}

/// One entry of the sign-in log: every token request that named a client, and the delegated (user)
/// sign-ins a test recorded. Graph serves it as a `signIn` (`GET /beta/auditLogs/signIns`), and the
/// usage reports under `/beta/reports` are computed from it.
public struct SignInEvent: Sendable, Equatable {
    public var sequence: Int64
    public var time: Date
    public var tenantID: String
    public var appId: String
    /// The keyId of the key or password credential presented (nil when none was identified).
    public var keyId: String?
    /// Upper-case hex SHA-1 of the certificate presented (certificates only).
    public var thumbprint: String?
    /// `success` or `failure`.
    public var result: String
    /// The AADSTS code of a failure (e.g. 700027).
    public var errorCode: Int?
    /// What the client presented: `certificate` (a client assertion), `secret`, or `none`.
    /// Graph's spelling is ``clientCredentialType(certificate:)``.
    public var credentialType: String
    /// The sign-in's id in Graph (a GUID; `lastSignInRequestId` in the reports). Made when logged.
    public var id: String = ""
    /// The app's service principal in the tenant.
    public var servicePrincipalID: String? = nil
    /// The app's display name at the time of the sign-in.
    public var appDisplayName: String? = nil
    /// The resource the token was asked for (the scope without `/.default`), when the request named one.
    public var resource: String? = nil
    /// The failure's message (Graph's `status.failureReason`).
    public var failureReason: String? = nil
    /// App-only (`servicePrincipal`) or delegated (a user's sign-in).
    public var eventType: SignInEventType = .servicePrincipal
    /// The user of a delegated sign-in (nil for app-only ones).
    public var userPrincipalName: String? = nil
    public var userId: String? = nil

    public var isDelegated: Bool { eventType != .servicePrincipal }

    /// Graph's `clientCredentialType`: `clientSecret`, `none`, or for a certificate assertion
    /// `certificate` (``EmulatorSettings/certificateClientCredentialType``).
    public func clientCredentialType(certificate: String) -> String {
        switch credentialType {
        case "certificate": return certificate
        case "secret": return "clientSecret"
        default: return "none"
        }
    }
}
