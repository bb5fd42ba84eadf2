import Foundation

/// Everything about the emulator's behaviour that a test may want to change. Defaults follow
/// Entra as documented and observed; each setting marked UNCONFIRMED is a choice where no source
/// says what Entra does (see docs/emulator.md).
public struct EmulatorSettings: Sendable, Codable, Equatable {
    /// `expires_in` of minted access tokens (Entra: 3599 for client credentials).
    public var tokenLifetime: Int = 3599
    /// Leeway applied to assertion `nbf`/`exp` checks (UNCONFIRMED; 5 minutes).
    public var clockSkewLeeway: TimeInterval = 300
    /// Reject a client assertion whose `jti` was already used (Entra does not: MSAL Python reuses
    /// assertions for 9 minutes). Off by default.
    public var strictReplay: Bool = false
    /// Seconds between a key being added and the token endpoint accepting it: fixed (min == max) or
    /// uniformly random in the range. Graph GET shows the key at once. Entra: seconds to minutes.
    public var propagationDelayMin: TimeInterval = 0
    public var propagationDelayMax: TimeInterval = 0
    /// An app's own role-less token may GET its own application object (UNCONFIRMED; off: Graph
    /// documents only addKey/removeKey as needing no permission, and an app-only token without a
    /// role is normally refused a read of the application object, so KeyRoll must work without it).
    public var allowSelfRead: Bool = false
    /// Reject proofs whose `exp − nbf` exceeds 10 minutes (UNCONFIRMED; Graph docs say "should").
    public var strictProofLifetime: Bool = false
    /// Return `key` on list requests with `$select=keyCredentials` (UNCONFIRMED; docs disagree).
    public var keyOnListSelect: Bool = false
    /// Echo `key` in the addKey response (UNCONFIRMED; null).
    public var addKeyEchoesKey: Bool = false
    /// Items across keyCredentials + passwordCredentials before Directory_ResourceSizeExceeded.
    public var maxCredentialItems: Int = 1000
    /// Whether a PATCH that re-sends an existing key credential unchanged (same keyId and
    /// certificate, as a read-merge-PATCH does) makes the token endpoint wait for it to propagate
    /// again (UNCONFIRMED; off: an unchanged credential stays as it was).
    public var patchRepropagatesExistingKeys: Bool = false
    /// Enforce G-addcert's "endDateTime at most one year after startDateTime" (UNCONFIRMED; off).
    public var enforceOneYearKeyLifetime: Bool = false
    /// Days the sign-in log serves an entry (`/beta/auditLogs/signIns`): Entra keeps sign-ins 30 days
    /// with a P1/P2 licence, 7 without. Older entries are kept but not served.
    public var signInLogRetentionDays: Double = 30
    /// Whether the tenant has an Entra ID P1/P2 licence. Without one Graph serves neither the
    /// sign-in log nor the usage reports through its API: every audit-log and report route answers
    /// 403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant` (the code and message seen from
    /// Graph; UNCONFIRMED that every route answers alike).
    public var signInLogLicensed: Bool = true
    /// Seconds before a sign-in appears in the sign-in log (UNCONFIRMED: Entra documents no figure;
    /// minutes to hours are seen). 0: at once.
    public var signInLogLatency: TimeInterval = 0
    /// Seconds before a sign-in counts in the usage reports under `/beta/reports` (UNCONFIRMED:
    /// undocumented; the closest documented figure, users' `signInActivity`, is "up to 24 hours"). 0: at once.
    public var reportLatency: TimeInterval = 0
    /// `clientCredentialType` of a sign-in with a certificate's client assertion (UNCONFIRMED: Graph's
    /// enum has both `clientAssertion` and `certificate`; `clientAssertion` is assumed).
    public var certificateClientCredentialType: String = "clientAssertion"
    /// Whether a delegated (user) sign-in in which a confidential client redeemed the code with a
    /// secret or certificate shows that credential's `servicePrincipalCredentialKeyId` and
    /// `servicePrincipalCredentialThumbprint` (UNCONFIRMED: Graph documents them for "the service
    /// principal"; off: null, and a keyId filter does not match such sign-ins).
    public var delegatedSignInsCarryCredentialKeyId: Bool = false
    /// Whether the tenant default app management policy stays in force, for the restriction types an
    /// application's assigned policy does not name (UNCONFIRMED: Graph's docs say so since 2025;
    /// earlier versions said an assigned policy replaces the default entirely). On.
    public var appPolicyInheritsDefault: Bool = true
    /// Measure a new credential's lifetime, against an app management policy's `maxLifetime`, from
    /// its `startDateTime` (UNCONFIRMED; off: from now to its `endDateTime`).
    public var appPolicyLifetimeFromStart: Bool = false
    /// Graph throttling modelled on the documented identity budgets.
    public var throttling: ThrottleSettings = .init()
    /// Seed for every random choice (propagation delay, fault probabilities): same seed, same run.
    public var seed: UInt64 = 0x4B6579526F6C6C

    public init() {}

    public struct ThrottleSettings: Sendable, Codable, Equatable {
        public var enabled: Bool = false
        /// Writes per app+tenant per window (Graph: 3,000 per 150 s).
        public var writesPerWindow: Int = 3000
        public var writeWindow: TimeInterval = 150
        /// `$select=keyCredentials` on applications per tenant per minute (Graph: 150).
        public var keyCredentialSelectsPerMinute: Int = 150
        /// Token requests per client per 10 s before AADSTS-style 429 (not documented; off when 0).
        public var tokenRequestsPer10s: Int = 0
        /// Requests to the sign-in log and the usage reports per app+tenant per `auditLogWindow`
        /// (Graph's identity and access reports: 5 per 10 s); off when 0.
        public var auditLogRequestsPerWindow: Int = 5
        public var auditLogWindow: TimeInterval = 10
        public init() {}
    }
}
