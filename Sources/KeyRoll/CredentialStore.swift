import EntraClient
import EntraCrypto
import Foundation
#if canImport(Glibc)
import Glibc
import KeyRollPrimitives
#endif

/// One identity's private folder (0700):
///
/// ```
/// identity.json          who this is: tenant, endpoints, object id, appId
/// journal.json           the roll state machine's durable state
/// keys/<SHA1>.key.pem    private keys (0600), one per held certificate
/// keys/<SHA1>.cert.pem   their certificates
/// current.pem            the active credential, key + certificate (AZURE_CLIENT_CERTIFICATE_PATH)
/// current-cert.pem, current-key.pem
/// lock                   held (flock) by the one agent rolling this identity
/// ```
/// Every write is atomic and fsynced; the store refuses to open if group or others can read it.
/// Every file-system call passes `hook` first (see ``SideEffect``): the crash-point tests stop or
/// fail the process there.
public final class CredentialStore: @unchecked Sendable {
    public let path: String
    public let hook: SideEffectHook

    public struct Identity: Codable, Sendable, Equatable {
        public var tenantId: String
        public var authorityHost: String
        public var graphBaseURL: String
        public var applicationObjectId: String
        public var appId: String
        public var displayName: String?
        /// This host's replica of the app (nil: the app runs on one host). Every certificate the
        /// agent makes carries it (``CredentialName``); it never changes for a store.
        public var replica: ReplicaName?
        /// The longest lifetime, in seconds, Entra accepts for this app's certificates (from the
        /// bundle: the app management policy the provisioner read). nil: no such limit is known.
        /// The agent caps its roll policy with it (``RollPolicy/capped(by:)``). Absent from stores
        /// written before it existed, which read as nil.
        public var maximumCertificateValidity: TimeInterval?

        /// Who a bootstrap bundle says this is.
        public init(bundle b: BootstrapBundle) {
            self.init(tenantId: b.tenantId, authorityHost: b.authorityHost, graphBaseURL: b.graphBaseURL,
                      applicationObjectId: b.applicationObjectId, appId: b.appId, displayName: b.displayName, replica: b.replica,
                      maximumCertificateValidity: b.maximumCertificateValidity)
        }

        /// Checks everything KeyRoll will put into a URL: endpoints must not carry this identity's
        /// tokens and proofs in the clear (``SecureURL``), and the tenant, object id and appId must be
        /// Entra identifiers, so none can redirect a request to another path (``EntraIdentifier``).
        public func validate() throws {
            try SecureURL.check(authorityHost, what: "The identity's authorityHost")
            try SecureURL.check(graphBaseURL, what: "The identity's graphBaseURL")
            try EntraIdentifier.checkTenant(tenantId, what: "The identity's tenantId")
            try EntraIdentifier.checkGUID(applicationObjectId, what: "The identity's applicationObjectId")
            try EntraIdentifier.checkGUID(appId, what: "The identity's appId")
            if let cap = maximumCertificateValidity {
                guard cap.isFinite, cap > 0 else {
                    throw BootstrapBundle.BundleError.unreadable("its maximumCertificateValidity (\(cap)) is not a positive number of seconds")
                }
            }
        }

        public init(tenantId: String, authorityHost: String, graphBaseURL: String, applicationObjectId: String, appId: String, displayName: String?,
                    replica: ReplicaName? = nil, maximumCertificateValidity: TimeInterval? = nil) {
            self.replica = replica
            self.maximumCertificateValidity = maximumCertificateValidity
            self.tenantId = tenantId
            self.authorityHost = authorityHost
            self.graphBaseURL = graphBaseURL
            self.applicationObjectId = applicationObjectId
            self.appId = appId
            self.displayName = displayName
        }
    }

    public enum StoreError: Error, CustomStringConvertible, Equatable {
        case notInitialized(String)
        case locked(String)
        case corrupted(String)
        case missingKey(thumbprint: String, path: String)

        public var description: String {
            switch self {
            case .notInitialized(let p):
                return "\(p) is not a KeyRoll store (no identity.json). Import a bootstrap bundle first: keyroll import --bundle FILE --store \(p)"
            case .locked(let p):
                return "Another KeyRoll agent holds the lock on \(p)/lock. Only one agent may roll an identity; stop the other one (or wait for it) first."
            case .corrupted(let why):
                return "The store is damaged: \(why). This run changed nothing in Entra. Restore the store from backup, or re-bootstrap the app (keyroll rebootstrap) and import the new bundle into an empty folder."
            case .missingKey(let t, let p):
                return "The private key for certificate \(t) is missing from \(p), and the journal still needs it: KeyRoll cannot sign in or prove possession with it. "
                + "Restore the store from backup, or re-bootstrap the app (keyroll rebootstrap) and import the new bundle into an empty folder."
            }
        }
    }

    public init(path: String, hook: SideEffectHook = .none) {
        self.path = path.hasSuffix("/") ? String(path.dropLast()) : path
        self.hook = hook
    }

    var keysDir: String { path + "/keys" }
    public var currentPEMPath: String { path + "/current.pem" }
    public var exists: Bool { FileManager.default.fileExists(atPath: path + "/identity.json") }
    /// Whether the journal was ever written (an import writes it after the identity and the key).
    public var hasJournal: Bool { FileManager.default.fileExists(atPath: path + "/journal.json") }

    /// Checks permissions of the folder and every file in it.
    public func checkPermissions() throws {
        try SecureFiles.checkPrivate(path, expected: 0o700)
        if FileManager.default.fileExists(atPath: keysDir) { try SecureFiles.checkPrivate(keysDir, expected: 0o700) }
        for dir in [path, keysDir] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".pem") && !name.hasSuffix("cert.pem") {
                try SecureFiles.checkPrivate(dir + "/" + name, expected: 0o600)
            }
        }
    }

    /// Takes the exclusive lock on this identity, without waiting: an agent that cannot have it
    /// must not roll. The lock belongs to the returned object (released when it is released), so
    /// two rollers can never share one, even through the same `CredentialStore`.
    public func lock() throws -> StoreLock { try StoreLock(path: path + "/lock", store: path) }

    // MARK: identity and journal

    public func create(identity: Identity) throws {
        try SecureFiles.ensurePrivateDirectory(path)
        try SecureFiles.ensurePrivateDirectory(keysDir)
        _ = try lock()  // creates the lock file now (and refuses while an agent holds it), so opening the store later writes nothing
        try writeJSON(identity, to: path + "/identity.json", hook: hook)
    }

    public func identity() throws -> Identity {
        guard exists else { throw StoreError.notInitialized(path) }
        return try readJSON(Identity.self, from: path + "/identity.json")
    }

    public func journal() throws -> Journal {
        guard FileManager.default.fileExists(atPath: path + "/journal.json") else { throw StoreError.corrupted("journal.json is missing") }
        let j = try readJSON(Journal.self, from: path + "/journal.json")
        guard j.version == Journal.currentVersion else { throw StoreError.corrupted("journal version \(j.version) is not \(Journal.currentVersion)") }
        return j
    }

    /// Durably records `journal` (atomic replace + fsync of file and folder).
    public func save(_ journal: Journal) throws { try writeJSON(journal, to: path + "/journal.json", hook: hook) }

    // MARK: keys

    public func keyPath(_ thumbprint: String) -> String { "\(keysDir)/\(thumbprint).key.pem" }
    public func certPath(_ thumbprint: String) -> String { "\(keysDir)/\(thumbprint).cert.pem" }

    /// Writes a new key and its certificate. Until the journal records them they are untracked:
    /// a crash before that leaves files the next ``sweep(keeping:)`` destroys. On a failure (a full
    /// disk) whatever was written is destroyed at once.
    public func storeCredential(_ c: SigningCredential) throws {
        let t = c.certificate.sha1Thumbprint.hex
        try SecureFiles.ensurePrivateDirectory(keysDir)
        do {
            try SecureFiles.writeAtomically(c.certificate.pem, to: certPath(t), mode: 0o600, hook: hook)
            try SecureFiles.writeAtomically(c.privateKey.pkcs8PEM, to: keyPath(t), hook: hook)
        } catch {
            try? destroyCredential(t)
            throw error
        }
    }

    public func credential(_ thumbprint: String) throws -> SigningCredential {
        guard hasCredential(thumbprint) else { throw StoreError.missingKey(thumbprint: thumbprint, path: keysDir) }
        // never through a link, only files this user owns; the key must be private
        let keyText = String(decoding: try SecureFiles.readSecret(keyPath(thumbprint), limit: 64 * 1024), as: UTF8.self)
        let certText = String(decoding: try SecureFiles.readSecret(certPath(thumbprint), limit: 64 * 1024, requirePrivate: false), as: UTF8.self)
        do {
            let c = try SigningCredential(privateKey: try RSAPrivateKey(pem: keyText), certificate: try X509Certificate(pem: certText))
            guard c.certificate.sha1Thumbprint.hex == thumbprint else { throw StoreError.corrupted("keys/\(thumbprint).cert.pem holds another certificate") }
            return c
        } catch let e as StoreError { throw e } catch {
            throw StoreError.corrupted("keys/\(thumbprint): \(error)")
        }
    }

    public func hasCredential(_ thumbprint: String) -> Bool { FileManager.default.fileExists(atPath: keyPath(thumbprint)) }

    /// Destroys a private key and its certificate. Call it only once the journal no longer lists
    /// the key: until then a crash must find it (see docs/design.md, "Crash points").
    public func destroyCredential(_ thumbprint: String) throws {
        try SecureFiles.shred(keyPath(thumbprint), hook: hook)
        try SecureFiles.shred(certPath(thumbprint), hook: hook)
    }

    /// Thumbprints of the keys on disk (whole `keys/<SHA1>.key.pem` files).
    public func keysOnDisk() -> Set<String> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: keysDir)) ?? []
        return Set(names.compactMap { Self.thumbprint(ofKeyFile: $0, suffix: ".key.pem") })
    }

    /// Removes what a crash can leave behind, and nothing else: key and certificate files the
    /// journal does not list (`keep`), and temporary files of interrupted atomic writes. Only
    /// names KeyRoll itself writes are touched. Returns the removed file names, for the log.
    @discardableResult
    public func sweep(keeping keep: Set<String>) throws -> [String] {
        var removed: [String] = []
        for (dir, prefix) in [(keysDir, "keys/"), (path, "")] {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
                let file = dir + "/" + name
                if name.hasPrefix("."), name.contains(".tmp-") {
                    try SecureFiles.shred(file, hook: hook)
                    removed.append(prefix + name)
                } else if dir == keysDir, let t = Self.thumbprint(ofKeyFile: name, suffix: ".key.pem") ?? Self.thumbprint(ofKeyFile: name, suffix: ".cert.pem"),
                          !keep.contains(t) {
                    try SecureFiles.shred(file, hook: hook)
                    removed.append(prefix + name)
                }
            }
        }
        return removed
    }

    private static func thumbprint(ofKeyFile name: String, suffix: String) -> String? {
        guard name.hasSuffix(suffix) else { return nil }
        let t = String(name.dropLast(suffix.count))
        return t.count == 40 && t.allSatisfy({ $0.isHexDigit && !$0.isLowercase }) ? t : nil
    }

    /// Publishes `c` as the application's credential: `current.pem` (key + cert, the form
    /// azure-identity's CertificateCredential reads), `current-cert.pem`, `current-key.pem`. Each file
    /// is replaced atomically; readers see the old or the new, never a mix within a file.
    public func publish(_ c: SigningCredential) throws {
        try SecureFiles.writeAtomically(c.privateKey.pkcs8PEM, to: path + "/current-key.pem", hook: hook)
        try SecureFiles.writeAtomically(c.certificate.pem, to: path + "/current-cert.pem", mode: 0o600, hook: hook)
        try SecureFiles.writeAtomically(c.combinedPEM, to: currentPEMPath, hook: hook)
    }

    /// The published credential, if any.
    public func published() -> SigningCredential? {
        guard let bytes = try? SecureFiles.readSecret(currentPEMPath, limit: 64 * 1024) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        return try? SigningCredential(combinedPEM: text)
    }

    // MARK: JSON files

    private func writeJSON<T: Encodable>(_ value: T, to file: String, hook: SideEffectHook = .none) throws {
        try SecureFiles.writeAtomically(Array(try JSONEncoder.readable().encode(value)), to: file, hook: hook)
    }

    private func readJSON<T: Decodable>(_ type: T.Type, from file: String) throws -> T {
        let data: Data
        do { data = Data(try SecureFiles.readSecret(file, limit: 4 << 20, requirePrivate: false)) } catch {
            throw StoreError.corrupted("\((file as NSString).lastPathComponent) cannot be read (\(error))")
        }
        do { return try JSONDecoder.utcDates().decode(T.self, from: data) } catch {
            throw StoreError.corrupted("\((file as NSString).lastPathComponent) is not valid (\(String(describing: error).prefix(120)))")
        }
    }
}

/// The exclusive `flock` on one identity's store, held for as long as this object lives. `flock`
/// locks belong to an open file description, so a second `StoreLock` on the same store fails even
/// inside the same process.
public final class StoreLock: @unchecked Sendable {
    private let fd: Int32

    init(path: String, store: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SecureFileError.io(path: path, operation: "open", errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw CredentialStore.StoreError.locked(store)
        }
        self.fd = fd
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
