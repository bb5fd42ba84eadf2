import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import PKCS11
#if canImport(Glibc)
import Glibc
#endif

/// One identity's private folder (0700):
///
/// ```
/// identity.json          who this is: tenant, endpoints, object id, appId
/// journal.json           the roll state machine's durable state
/// keys/<SHA1>.key.pem    private keys (0600), one per held certificate (file key store)
/// keys/<SHA1>.key.p11    or: where the key lives in the PKCS#11 token (CKA_ID, CKA_LABEL; no key material)
/// keys/<SHA1>.cert.pem   their certificates
/// current.pem            the active credential, key + certificate (AZURE_CLIENT_CERTIFICATE_PATH); file keys only
/// current-cert.pem, current-key.pem (file keys only)
/// lock                   held (flock) by the one agent rolling this identity
/// ```
///
/// The identity's ``KeyStoreSetting`` says where new keys are made: files (the default), or a
/// PKCS#11 token, where they are generated non-extractable and every signature is made. A store
/// may hold both kinds at once: the bootstrap key arrives as a file and lives only until the
/// first roll replaces it with a token key.
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
        /// Where new keys are generated (nil: files). Absent from older stores, which read as files.
        public var keyStore: KeyStoreSetting?

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
            try keyStore?.validate()
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

    /// Where the PIN of a PKCS#11 token is looked for when its URI names no `pin-source`
    /// (`KEYROLL_PKCS11_PIN`).
    public let environment: [String: String]
    private let tokenCache = TokenCache()

    public init(path: String, hook: SideEffectHook = .none, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.path = path.hasSuffix("/") ? String(path.dropLast()) : path
        self.hook = hook
        self.environment = environment
    }

    /// Where this identity's new keys are generated.
    public var keyStoreKind: KeyStoreKind { ((try? identity())?.keyStore?.kind) ?? .file }

    /// The identity's PKCS#11 token, opened (and logged in) on first use; nil for a file store.
    public func token() throws -> (token: PKCS11Token, labelPrefix: String)? {
        guard let setting = try identity().keyStore, setting.kind == .pkcs11 else { return nil }
        let (uri, prefix) = try setting.pkcs11()
        if let t = tokenCache.token { return (t, prefix) }
        let t = try PKCS11Token.open(uri, environment: environment)
        tokenCache.token = t
        return (t, prefix)
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
    /// Where a token key is recorded (CKA_ID and label; no key material).
    public func tokenKeyPath(_ thumbprint: String) -> String { "\(keysDir)/\(thumbprint).key.p11" }
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

    /// Generates a key where this identity keeps its keys and a self-signed certificate for it,
    /// and stores them, untracked until the journal records them (a crash before that leaves what
    /// the next ``sweep(keeping:)`` destroys, files and token objects alike). In a PKCS#11 token the
    /// key is generated inside it, non-extractable, and the token signs the certificate.
    public func generateCredential(size: RSAKeySize, subject: String, notBefore: Date, notAfter: Date) throws -> SigningCredential {
        guard let (token, prefix) = try token() else {
            let c = try SigningCredential.generate(size: size, subject: .init(commonName: subject), notBefore: notBefore, notAfter: notAfter)
            try storeCredential(c)
            return c
        }
        var id = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in id.indices { id[i] = UInt8.random(in: 0...255, using: &rng) }
        let ref = TokenKeyReference(id: id, labelPrefix: prefix)
        try SecureFiles.ensurePrivateDirectory(keysDir)
        let key = try token.generateRSAKeyPair(bits: size.rawValue, id: id, label: ref.label, hook: hook)
        do {
            let cert = try CertificateIssuer.selfSigned(key: key, subject: .init(commonName: subject, organizationalUnit: KeyStoreSetting.tokenCertificateOU),
                                                        notBefore: notBefore, notAfter: notAfter)
            let c = try SigningCredential(signer: key, certificate: cert)
            let t = cert.sha1Thumbprint.hex
            try SecureFiles.writeAtomically(cert.pem, to: certPath(t), mode: 0o600, hook: hook)
            try SecureFiles.writeAtomically(Array(try JSONEncoder.readable().encode(ref)), to: tokenKeyPath(t), hook: hook)
            return c
        } catch {
            // nothing records this key: destroy it now (what a crash leaves, the sweep destroys)
            try? token.destroyKeys(id: id, label: ref.label, hook: hook)
            throw error
        }
    }

    public func credential(_ thumbprint: String) throws -> SigningCredential {
        guard hasCredential(thumbprint) else { throw StoreError.missingKey(thumbprint: thumbprint, path: keysDir) }
        if !FileManager.default.fileExists(atPath: keyPath(thumbprint)) { return try tokenCredential(thumbprint) }
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

    /// A token key: its record, the key pair with that CKA_ID on the token, and its certificate.
    private func tokenCredential(_ thumbprint: String) throws -> SigningCredential {
        let ref = try tokenKeyReference(thumbprint)
        guard let (token, _) = try token() else {
            throw StoreError.corrupted("keys/\(thumbprint).key.p11 names a PKCS#11 key, but identity.json configures no token (keyStore)")
        }
        guard let key = try token.key(id: ref.id, label: ref.label) else {
            throw StoreError.missingKey(thumbprint: thumbprint, path: "the token \(token.uri) (CKA_ID \(Hex.encode(ref.id)))")
        }
        let certText = String(decoding: try SecureFiles.readSecret(certPath(thumbprint), limit: 64 * 1024, requirePrivate: false), as: UTF8.self)
        do {
            let c = try SigningCredential(signer: key, certificate: try X509Certificate(pem: certText))
            guard c.certificate.sha1Thumbprint.hex == thumbprint else { throw StoreError.corrupted("keys/\(thumbprint).cert.pem holds another certificate") }
            return c
        } catch let e as StoreError { throw e } catch {
            throw StoreError.corrupted("keys/\(thumbprint): \(error)")
        }
    }

    /// A token key's record, refused unless its label is this store's prefix and its id: a record
    /// edited to name another store's (or application's) object can never have it used or destroyed.
    func tokenKeyReference(_ thumbprint: String) throws -> TokenKeyReference {
        let ref = try readJSON(TokenKeyReference.self, from: tokenKeyPath(thumbprint))
        guard let setting = try identity().keyStore, setting.kind == .pkcs11, let prefix = setting.labelPrefix,
              ref == TokenKeyReference(id: ref.id, labelPrefix: prefix) else {
            throw StoreError.corrupted("keys/\(thumbprint).key.p11 names a token object that is not this store's (label \(ref.label.prefix(80)))")
        }
        return ref
    }

    /// Whether the store holds the key of `thumbprint`: its file, or its record of a token key.
    public func hasCredential(_ thumbprint: String) -> Bool {
        FileManager.default.fileExists(atPath: keyPath(thumbprint)) || FileManager.default.fileExists(atPath: tokenKeyPath(thumbprint))
    }

    /// Where the key of `thumbprint` lives (nil: not held).
    public func keyStoreKind(of thumbprint: String) -> KeyStoreKind? {
        if FileManager.default.fileExists(atPath: keyPath(thumbprint)) { return .file }
        if FileManager.default.fileExists(atPath: tokenKeyPath(thumbprint)) { return .pkcs11 }
        return nil
    }

    /// Destroys a private key and its certificate: a token key with `C_DestroyObject` first, then
    /// its record. Call it only once the journal no longer lists the key: until then a crash must
    /// find it (see docs/design.md, "Crash points").
    public func destroyCredential(_ thumbprint: String) throws {
        if FileManager.default.fileExists(atPath: tokenKeyPath(thumbprint)) {
            let ref = try tokenKeyReference(thumbprint)
            guard let (token, _) = try token() else {
                throw StoreError.corrupted("keys/\(thumbprint).key.p11 names a PKCS#11 key, but identity.json configures no token (keyStore): its objects cannot be destroyed")
            }
            try token.destroyKeys(id: ref.id, label: ref.label, hook: hook)
            try SecureFiles.shred(tokenKeyPath(thumbprint), hook: hook)
        }
        try SecureFiles.shred(keyPath(thumbprint), hook: hook)
        try SecureFiles.shred(certPath(thumbprint), hook: hook)
    }

    /// Thumbprints of the keys held (whole `keys/<SHA1>.key.pem` files and token key records).
    public func keysOnDisk() -> Set<String> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: keysDir)) ?? []
        return Set(names.compactMap { Self.thumbprint(ofKeyFile: $0, suffix: ".key.pem") ?? Self.thumbprint(ofKeyFile: $0, suffix: ".key.p11") })
    }

    /// Removes what a crash can leave behind, and nothing else: key and certificate files the
    /// journal does not list (`keep`), temporary files of interrupted atomic writes, and, in a
    /// PKCS#11 token, key objects with this store's label that no kept key records. Only names
    /// KeyRoll itself writes are touched. Returns what was removed, for the log.
    @discardableResult
    public func sweep(keeping keep: Set<String>, tokenFailure: ((any Error) -> Void)? = nil) throws -> [String] {
        var removed: [String] = []
        do { removed += try sweepToken(keeping: keep) } catch {
            // a token that cannot be reached now: its orphans wait for the next sweep (before every
            // roll); the file part still runs. Without a handler the failure is thrown.
            guard let tokenFailure else { throw error }
            tokenFailure(error)
        }
        for (dir, prefix) in [(keysDir, "keys/"), (path, "")] {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
                let file = dir + "/" + name
                if name.hasPrefix("."), name.contains(".tmp-") {
                    try SecureFiles.shred(file, hook: hook)
                    removed.append(prefix + name)
                } else if dir == keysDir, let t = Self.thumbprint(ofKeyFile: name, suffix: ".key.pem") ?? Self.thumbprint(ofKeyFile: name, suffix: ".cert.pem")
                            ?? Self.thumbprint(ofKeyFile: name, suffix: ".key.p11"),
                          !keep.contains(t) {
                    try SecureFiles.shred(file, hook: hook)
                    removed.append(prefix + name)
                }
            }
        }
        return removed
    }

    /// The token's part of the sweep: objects with this store's label prefix whose (CKA_ID, label)
    /// no kept key records. Refused (nothing destroyed) while a kept key has neither its file nor
    /// its record, or a record cannot be read: then what is kept is not known for sure.
    func sweepToken(keeping keep: Set<String>) throws -> [String] {
        guard let (token, prefix) = try token() else { return [] }
        var kept: Set<String> = []
        for t in keep {
            if FileManager.default.fileExists(atPath: tokenKeyPath(t)) {
                let ref = try tokenKeyReference(t)
                kept.insert(Hex.encode(ref.id) + " " + ref.label)
            } else if !FileManager.default.fileExists(atPath: keyPath(t)) {
                throw StoreError.missingKey(thumbprint: t, path: keysDir + " (neither a key file nor a token key record; the token is not swept)")
            }
        }
        var removed: [String] = []
        var done: Set<String> = []
        for o in try token.objects(labelPrefix: prefix) {
            let key = Hex.encode(o.id) + " " + o.label
            guard !kept.contains(key), done.insert(key).inserted else { continue }
            try token.destroyKeys(id: o.id, label: o.label, hook: hook)
            removed.append("token key \(o.label)")
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
    /// A token key has no key to publish: only `current-cert.pem` is written, and the key files of
    /// an earlier (file) key are removed; applications get tokens from the agent's token endpoint.
    public func publish(_ c: SigningCredential) throws {
        // an identity that keeps its keys in a token never publishes a key file, not even the
        // bootstrap's: an application set up meanwhile would lose it at the first roll
        guard let key = c.exportableKey, keyStoreKind == .file else {
            try SecureFiles.writeAtomically(c.certificate.pem, to: path + "/current-cert.pem", mode: 0o600, hook: hook)
            for stale in [currentPEMPath, path + "/current-key.pem"] where FileManager.default.fileExists(atPath: stale) {
                try SecureFiles.shred(stale, hook: hook)
            }
            return
        }
        try SecureFiles.writeAtomically(key.pkcs8PEM, to: path + "/current-key.pem", hook: hook)
        try SecureFiles.writeAtomically(c.certificate.pem, to: path + "/current-cert.pem", mode: 0o600, hook: hook)
        try SecureFiles.writeAtomically(key.pkcs8PEM + c.certificate.pem, to: currentPEMPath, hook: hook)
    }

    /// The published credential, if any: `current.pem`, or for a token key `current-cert.pem` with
    /// the held key it names.
    public func published() -> SigningCredential? {
        if let bytes = try? SecureFiles.readSecret(currentPEMPath, limit: 64 * 1024) {
            return try? SigningCredential(combinedPEM: String(decoding: bytes, as: UTF8.self))
        }
        guard let bytes = try? SecureFiles.readSecret(path + "/current-cert.pem", limit: 64 * 1024, requirePrivate: false),
              let cert = try? X509Certificate(pem: String(decoding: bytes, as: UTF8.self)),
              keyStoreKind == .pkcs11 || keyStoreKind(of: cert.sha1Thumbprint.hex) == .pkcs11 else { return nil }
        return try? credential(cert.sha1Thumbprint.hex)
    }

    // MARK: JSON files

    private func writeJSON<T: Encodable>(_ value: T, to file: String, hook: SideEffectHook = .none) throws {
        try SecureFiles.writeAtomically(Array(try JSONEncoder.readable().encode(value)), to: file, hook: hook)
    }

    func readJSON<T: Decodable>(_ type: T.Type, from file: String) throws -> T {
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

/// The token an identity is bound to, opened once per store object.
final class TokenCache: @unchecked Sendable {
    private let lock = NSLock()
    private var _token: PKCS11Token?
    var token: PKCS11Token? {
        get { lock.withLock { _token } }
        set { lock.withLock { _token = newValue } }
    }
}

/// Where an identity keeps its keys, recorded in identity.json at import.
public struct KeyStoreSetting: Codable, Sendable, Equatable {
    public var kind: KeyStoreKind
    /// The RFC 7512 URI of the token (PKCS#11 only): module, token and PIN source, never the PIN.
    public var uri: String?
    /// The CKA_LABEL prefix of this store's objects (`keyroll:<random>:`): what a sweep may destroy.
    public var labelPrefix: String?

    /// The certificate OU that says a key was generated in a token (shown by `keyroll audit`).
    public static let tokenCertificateOU = "keyroll-pkcs11"

    public init(kind: KeyStoreKind, uri: String? = nil, labelPrefix: String? = nil) {
        self.kind = kind
        self.uri = uri
        self.labelPrefix = labelPrefix
    }

    /// A new PKCS#11 setting for `uri` with a label prefix of its own.
    public static func pkcs11(_ uri: PKCS11URI) -> KeyStoreSetting {
        var rng = SystemRandomNumberGenerator()
        let tag = Hex.encode((0..<6).map { _ in UInt8.random(in: 0...255, using: &rng) })
        return KeyStoreSetting(kind: .pkcs11, uri: uri.text, labelPrefix: "keyroll:\(tag):")
    }

    func pkcs11() throws -> (PKCS11URI, String) {
        guard let text = uri, let prefix = labelPrefix, prefix.count == 21, prefix.hasPrefix("keyroll:"), prefix.hasSuffix(":"),
              prefix.dropFirst(8).dropLast().allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw CredentialStore.StoreError.corrupted("identity.json's keyStore names PKCS#11 without a uri and labelPrefix")
        }
        return (try PKCS11URI(text), prefix)
    }

    func validate() throws {
        if kind == .pkcs11 {
            do { _ = try pkcs11() } catch let e as PKCS11URI.Invalid { throw CredentialStore.StoreError.corrupted("identity.json's keyStore: \(e)") }
        }
    }
}

/// What the store keeps of a token key (`keys/<SHA1>.key.p11`): how to find it again. Its label is
/// always the store's prefix followed by the id in hex, so a record can only ever name this store's
/// objects (``CredentialStore/tokenKeyReference(_:)`` checks it before the token is asked).
struct TokenKeyReference: Codable, Sendable, Equatable {
    var id: [UInt8]
    var label: String

    enum CodingKeys: String, CodingKey { case id, label }

    init(id: [UInt8], labelPrefix: String) {
        self.id = id
        self.label = labelPrefix + Hex.encode(id)
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let bytes = Hex.decode(try c.decode(String.self, forKey: .id)), (1...64).contains(bytes.count) else {
            throw DecodingError.dataCorruptedError(forKey: .id, in: c, debugDescription: "not a hex CKA_ID of 1 to 64 bytes")
        }
        id = bytes
        label = try c.decode(String.self, forKey: .label)
        guard label.utf8.count <= 256 else { throw DecodingError.dataCorruptedError(forKey: .label, in: c, debugDescription: "a label over 256 bytes") }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Hex.encode(id), forKey: .id)
        try c.encode(label, forKey: .label)
    }
}
