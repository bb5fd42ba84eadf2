import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging
import PKCS11

/// Creating a store from a bootstrap bundle.
extension Roller {
    // MARK: import

    /// Creates a store from a bootstrap bundle: the bootstrap credential becomes the active one and
    /// is published. The caller deletes the bundle file afterwards (it holds a private key).
    ///
    /// Import can die anywhere, and running it again with the same bundle finishes the job: a store
    /// of this identity without a journal is an interrupted import and is written again; a store
    /// whose journal holds just this bootstrap is already imported (its `current.pem` is checked).
    /// Any other store is refused, so an import never overwrites keys an agent has rolled.
    ///
    /// `keyStore` says where the agent generates this identity's keys from the first roll on
    /// (nil: files). The bootstrap key itself stays the file it arrived as: it has existed outside
    /// any token already, lives a day or two, and the first roll removes it from Entra and destroys
    /// it. A PKCS#11 token is opened (and logged in to) before anything is written, so a wrong URI or
    /// PIN leaves no store behind.
    @discardableResult
    public static func importBundle(_ bundle: BootstrapBundle, into store: CredentialStore, now: Date, keyStore: KeyStoreSetting? = nil) throws -> Journal {
        var identity = CredentialStore.Identity(bundle: bundle)
        identity.keyStore = keyStore
        try identity.validate()
        if let keyStore, keyStore.kind == .pkcs11 {
            let (uri, _) = try keyStore.pkcs11()
            _ = try PKCS11Token.open(uri, environment: store.environment)
        }
        let cred: SigningCredential
        do { cred = try bundle.signingCredential() } catch {
            throw BootstrapBundle.BundleError.unreadable("its key and certificate do not fit together (\(error))")
        }
        let thumbprint = cred.certificate.sha1Thumbprint.hex
        if store.exists {
            let refused = CredentialStore.StoreError.corrupted("\(store.path) already holds an identity; import into an empty folder")
            // the same identity and key store (a re-run of an interrupted import draws a new label
            // prefix and rewrites identity.json below; import itself makes no token object to orphan)
            guard var existing = try? store.identity(), existing.keyStore?.kind == identity.keyStore?.kind, existing.keyStore?.uri == identity.keyStore?.uri else { throw refused }
            existing.keyStore = identity.keyStore
            guard existing == identity else { throw refused }
            if store.hasJournal {
                let j = try store.journal()
                guard j.active == thumbprint, j.roll == nil, j.credentials.map(\.thumbprint) == [thumbprint] else { throw refused }
                let lock = try store.lock()
                defer { withExtendedLifetime(lock) {} }
                if store.published()?.certificate != cred.certificate { try store.publish(cred) }
                return j
            }
        }
        guard cred.certificate.notAfter > now else {
            throw BootstrapBundle.BundleError.unreadable("its bootstrap certificate expired at \(UTCTime.iso(cred.certificate.notAfter)), so the app cannot sign in with it")
        }
        try store.create(identity: identity)
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        try store.storeCredential(cred)
        let record = CredentialRecord(thumbprint: thumbprint, notBefore: cred.certificate.notBefore,
                                      notAfter: cred.certificate.notAfter, keyId: bundle.bootstrap.keyId, origin: .bootstrap)
        let journal = Journal(active: record)
        try store.save(journal)
        try store.publish(cred)
        return journal
    }
}
