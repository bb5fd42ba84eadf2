import Foundation

/// How many replicas one application registration can hold.
///
/// Every replica holds one key, and two while it rolls (the new key is added before the old one
/// goes), so an app with N replicas needs room for 2N keyCredentials. Entra documents no limit of
/// its own for keyCredentials: it documents "a global limit of about 1000 items across all the
/// collection properties on the app object" (shared with redirect URIs, app roles, identifier
/// URIs, …), and a 2023 report on Microsoft's Graph docs tracker saw `Directory_ResourceSizeExceeded`
/// after some 600 keyCredentials (the limit is on the object's size, and certificates are large).
/// KeyRoll therefore plans with **500 keyCredentials per app, so 250 replicas**, and the limit is a
/// manifest setting (`defaults.keyCredentialLimit`) for tenants that know better. The emulator
/// enforces its own limit (`maxCredentialItems`), so tests can reach it. See docs/replicas.md.
public struct ReplicaCapacity: Sendable, Equatable {
    /// What KeyRoll assumes when the manifest does not say.
    public static let defaultKeyCredentialLimit = 500
    /// Entra's documented ceiling for all collection items of an application.
    public static let entraItemLimit = 1000
    /// Keys one replica holds at most: its key and, while rolling, the new one.
    public static let keysPerReplica = 2

    public let keyCredentialLimit: Int
    public init(keyCredentialLimit: Int = ReplicaCapacity.defaultKeyCredentialLimit) { self.keyCredentialLimit = keyCredentialLimit }

    /// The most replicas an app can have: the limit divided by the 2 keys each holds while it rolls.
    public var maximumReplicas: Int { keyCredentialLimit / Self.keysPerReplica }

    /// Refuses `replicas` outside 1…``maximumReplicas``, saying what to do instead.
    public func check(replicas: Int, app: String) throws {
        guard replicas >= 1 else { throw Manifest.ManifestError("'\(app)' asks for \(replicas) replicas; give 1 or more (leave 'replicas' out for a single-host app).") }
        guard replicas <= maximumReplicas else {
            throw Manifest.ManifestError("'\(app)' asks for \(replicas) replicas, but one app registration holds at most \(maximumReplicas) "
                + "(\(keyCredentialLimit) keyCredentials, 2 per replica while it rolls). Split the hosts over several app registrations "
                + "(e.g. \(app)-a and \(app)-b, each with up to \(maximumReplicas) replicas), or give fewer hosts a key of their own: processes and containers on one host can share that host's agent through its token endpoint.")
        }
    }
}
