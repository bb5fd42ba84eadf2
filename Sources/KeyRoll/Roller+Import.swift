import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

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
    @discardableResult
    public static func importBundle(_ bundle: BootstrapBundle, into store: CredentialStore, now: Date) throws -> Journal {
        let identity = CredentialStore.Identity(bundle: bundle)
        try identity.validate()
        let cred: SigningCredential
        do { cred = try bundle.signingCredential() } catch {
            throw BootstrapBundle.BundleError.unreadable("its key and certificate do not fit together (\(error))")
        }
        let thumbprint = cred.certificate.sha1Thumbprint.hex
        if store.exists {
            let refused = CredentialStore.StoreError.corrupted("\(store.path) already holds an identity; import into an empty folder")
            guard (try? store.identity()) == identity else { throw refused }
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
