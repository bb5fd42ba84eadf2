import CPKCS11
import Crypto
import EntraCrypto
import KeyRollPrimitives
import Synchronization

/// One token of a PKCS#11 module, as a URI selects it, with one logged-in read/write session that
/// every call shares (calls are serialised). When the session or the token goes away
/// (`CKR_SESSION_HANDLE_INVALID`, `CKR_TOKEN_NOT_PRESENT`, …) the next call opens a new session,
/// logs in again and retries once.
///
/// Every call that changes the token passes the caller's ``SideEffectHook`` before
/// (`p11 C_GenerateKeyPair`) and after (`p11-done C_GenerateKeyPair`) it, so a test can stop the
/// process there or make the call fail as a device would (`CKR_DEVICE_ERROR`, `CKR_DEVICE_MEMORY`).
public final class PKCS11Token: @unchecked Sendable {
    public let uri: PKCS11URI
    let module: PKCS11Module
    private let environment: [String: String]
    private let state = Mutex<State>(State())

    struct State {
        var session: CK_SESSION_HANDLE?
        var slot: CK_SLOT_ID?
        /// Sessions opened so far (the first, then one per recovery): for tests and logs.
        var opened = 0
        /// A PIN the token refused: never offered again (each wrong try brings the token closer
        /// to locking its user PIN, for every application on it) until the PIN source changes.
        var refusedPIN: [UInt8]?
    }

    private static let open = Mutex<[String: PKCS11Token]>([:])

    /// The token `uri` names, with its PIN from `pin-source` or, without one, from
    /// `environment["KEYROLL_PKCS11_PIN"]`. Tokens are shared per process by URI.
    public static func open(_ uri: PKCS11URI, environment: [String: String]) throws -> PKCS11Token {
        // every caller must have a PIN of its own, even for a token another store has opened
        _ = try readPIN(uri, environment: environment)  // no PIN, no module loaded
        let modulePath = try PKCS11Module.resolve(uri)
        // one object (one session, one login state) per token, however its URI is written
        let key = [modulePath, uri.token ?? "", uri.serial ?? "", uri.manufacturer ?? "", uri.model ?? "", uri.slotID.map(String.init) ?? ""].joined(separator: "\u{1}")
        return try open.withLock { tokens in
            if let t = tokens[key] { return t }
            let module = try PKCS11Module.load(path: modulePath)
            let token = PKCS11Token(uri: uri, module: module, environment: environment)
            _ = try token.withSession { _ in () }  // finds the token and logs in now: a wrong PIN or URI fails at start
            tokens[key] = token
            return token
        }
    }

    /// The PIN: the file `pin-source` names (only its first line; it must be readable by this user
    /// alone), or `KEYROLL_PKCS11_PIN`. Never the command line.
    static func readPIN(_ uri: PKCS11URI, environment: [String: String]) throws -> [UInt8] {
        if let file = uri.pinFile {
            let bytes: [UInt8]
            do { bytes = try SecureFiles.readSecret(file, limit: 4096) } catch {
                throw PKCS11URI.Invalid(description: "the PIN file \(file) (pin-source) cannot be read: \(error). It must be a file owned by the agent's user, mode 0600")
            }
            let line = bytes.prefix { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
            guard !line.isEmpty else { throw PKCS11URI.Invalid(description: "the PIN file \(file) (pin-source) is empty") }
            return Array(line)
        }
        guard let pin = environment["KEYROLL_PKCS11_PIN"], !pin.isEmpty else {
            throw PKCS11URI.Invalid(description: "no PIN for the token \(uri): add pin-source=file:/path (a 0600 file holding the PIN) to the URI, or set KEYROLL_PKCS11_PIN in the agent's environment")
        }
        return Array(pin.utf8)
    }

    init(uri: PKCS11URI, module: PKCS11Module, environment: [String: String]) {
        self.uri = uri
        self.module = module
        self.environment = environment
    }

    /// How many sessions this token has opened (1 until a session was lost and reopened).
    public var sessionsOpened: Int { state.withLock { $0.opened } }

    /// Closes the session behind this object's back, as a token that was pulled out and put back
    /// (or a daemon restart) does: the next call meets `CKR_SESSION_HANDLE_INVALID` from the
    /// module and must recover. For tests.
    public func closeSessionUnderneath() {
        state.withLock { s in if let h = s.session { _ = module.closeSession(h) } }
    }

    // MARK: sessions

    /// Runs `body` with the logged-in session; if the session or token was lost, opens a new one
    /// and runs `body` once more. Calls are serialised.
    /// `retry: false` for a call that changes the token: it may have taken effect before the
    /// session was lost, and running it again would make a second object; the sweep finds what
    /// the first made.
    func withSession<R>(retry: Bool = true, _ body: (CK_SESSION_HANDLE) throws -> R) throws -> R {
        try state.withLock { s in
            do {
                return try body(try session(&s))
            } catch let e as PKCS11Error where e.sessionLost {
                if let old = s.session { _ = module.closeSession(old) }
                s.session = nil
                s.slot = nil
                guard retry else { throw e }
                return try body(try session(&s))
            }
        }
    }

    /// Logs `h` in with the PIN as its source says now, unless the token warns that a wrong try
    /// could lock it, or this PIN was refused before.
    private func login(_ h: CK_SESSION_HANDLE, slot: CK_SLOT_ID, _ s: inout State) throws {
        var p = try Self.readPIN(uri, environment: environment)
        defer { for i in p.indices { p[i] = 0 } }
        if let refused = s.refusedPIN, refused == p {
            throw PKCS11Error(PKCS11Error.pinIncorrect, "C_Login (not tried again: the token refused this PIN before; put the right one in the PIN source)")
        }
        var info = CK_TOKEN_INFO()
        if module.getTokenInfo(slot, &info) == 0 {
            if info.flags & 0x40000 != 0 { throw PKCS11Error(PKCS11Error.pinLocked, "C_Login (not tried: the token reports its user PIN locked)") }
            if info.flags & 0x20000 != 0 {
                throw PKCS11Error(PKCS11Error.pinLocked, "C_Login (not tried: the token says one more wrong PIN locks it; log in once by hand with the right PIN to reset the counter)")
            }
        }
        let rv = p.withUnsafeMutableBufferPointer { module.login(h, 1 /* CKU_USER */, $0.baseAddress, CK_ULONG($0.count)) }
        if rv == PKCS11Error.pinIncorrect { s.refusedPIN = p }
        guard rv == 0 || rv == PKCS11Error.userAlreadyLoggedIn else { throw PKCS11Error(rv, "C_Login") }
        s.refusedPIN = nil
    }

    private func session(_ s: inout State) throws -> CK_SESSION_HANDLE {
        if let h = s.session { return h }
        let slot = try findSlot()
        var h: CK_SESSION_HANDLE = 0
        try check(module.openSession(slot, 0x2 | 0x4 /* CKF_RW_SESSION | CKF_SERIAL_SESSION */, nil, nil, &h), "C_OpenSession")
        do { try login(h, slot: slot, &s) } catch {
            _ = module.closeSession(h)
            throw error
        }
        s.session = h
        s.slot = slot
        s.opened += 1
        return h
    }

    /// Logs out and in again. libtpm2-pkcs11 (1.9) keeps every key it generated or used loaded in
    /// the TPM until logout, and a TPM holds only a few: without this, the second key generation
    /// of a login fails (`CKR_GENERAL_ERROR`, "out of memory for object contexts"), and a destroyed
    /// key stays loaded. Done after every key generation; harmless for other modules.
    ///
    /// A session that is not logged in sees no private object, so a lookup would find nothing
    /// rather than fail: if logging in again fails, the session counts as lost (the call is
    /// retried once on a new session, which logs in or fails loudly).
    private func refreshLogin() throws {
        try state.withLock { s in
            guard let h = s.session, let slot = s.slot else { return }
            _ = module.logout(h)
            do { try login(h, slot: slot, &s) } catch {
                // not logged in: let the next call open a session and log in (or fail loudly)
                _ = module.closeSession(h)
                s.session = nil
                s.slot = nil
                throw error
            }
        }
    }

    private func findSlot() throws -> CK_SLOT_ID {
        var count: CK_ULONG = 0
        try check(module.getSlotList(1, nil, &count), "C_GetSlotList")
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        try slots.withUnsafeMutableBufferPointer { try check(module.getSlotList(1, $0.baseAddress, &count), "C_GetSlotList") }
        var seen: [String] = []
        for slot in slots.prefix(Int(count)) {
            var info = CK_TOKEN_INFO()
            guard module.getTokenInfo(slot, &info) == 0 else { continue }
            let label = Self.padded(info.label), serial = Self.padded(info.serialNumber)
            let manufacturer = Self.padded(info.manufacturerID), model = Self.padded(info.model)
            if uri.selects(label: label, serial: serial, manufacturer: manufacturer, model: model, slot: UInt(slot)) { return slot }
            seen.append("'\(label)' (serial \(serial))")
        }
        throw PKCS11URI.Invalid(description: "no token matching \(uri) in \(module.path)"
                                + (seen.isEmpty ? " (it shows no token)" : "; it shows \(seen.joined(separator: ", "))"))
    }

    /// A fixed-width, space-padded PKCS#11 string field.
    static func padded<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { raw in
            let bytes = Array(raw).prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self).trimmingTrailingSpaces()
        }
    }

    // MARK: keys

    /// Generates an RSA key pair inside the token: the private key is a token object, private,
    /// sensitive and not extractable, for signing only; both halves carry `id` and `label`.
    public func generateRSAKeyPair(bits: Int, id: [UInt8], label: String, hook: SideEffectHook) throws -> PKCS11Key {
        let pub = Template()
            .add(CKA.token, bool: true).add(CKA.private, bool: false).add(CKA.verify, bool: true)
            .add(CKA.modulusBits, ulong: CK_ULONG(bits)).add(CKA.publicExponent, bytes: [0x01, 0x00, 0x01])
            .add(CKA.id, bytes: id).add(CKA.label, string: label)
        let priv = Template()
            .add(CKA.token, bool: true).add(CKA.private, bool: true).add(CKA.sensitive, bool: true).add(CKA.extractable, bool: false)
            .add(CKA.sign, bool: true).add(CKA.id, bytes: id).add(CKA.label, string: label)
        try hook.reach(SideEffect(.token, "C_GenerateKeyPair"))
        // never retried: a lost answer may hide a pair that exists; the sweep finds it by its label
        let (publicKey, protected): (RSAPublicKey, Bool) = try withSession(retry: false) { h in
            var mech = CK_MECHANISM(mechanism: 0 /* CKM_RSA_PKCS_KEY_PAIR_GEN */, pParameter: nil, ulParameterLen: 0)
            var hPub: CK_OBJECT_HANDLE = 0, hPriv: CK_OBJECT_HANDLE = 0
            try pub.withAttributes { pa, pc in
                try priv.withAttributes { qa, qc in
                    try check(module.generateKeyPair(h, &mech, pa, pc, qa, qc, &hPub, &hPriv), "C_GenerateKeyPair")
                }
            }
            // the same session, the handles it just got: the modulus, and proof the token kept the template
            let key = try readPublicKey(h, hPub)
            // refused on evidence only: a token that reports the key extractable or not sensitive.
            // (tpm2-pkcs11 1.9 can answer CKR_ATTRIBUTE_TYPE_INVALID for both right after generation;
            // then the template's request stands.)
            for o in [hPriv] + ((try? findKeys(h, CKO.privateKey, id, label)) ?? []) {
                if let sensitive = try? attribute(h, o, CKA.sensitive), let extractable = try? attribute(h, o, CKA.extractable) {
                    return (key, sensitive == [1] && extractable == [0])
                }
            }
            return (key, true)
        }
        try hook.reach(SideEffect(.tokenDone, "C_GenerateKeyPair"))
        guard protected else {
            try? destroyKeys(id: id, label: label, hook: .none)
            throw PKCS11Error(PKCS11Error.templateInconsistent, "C_GenerateKeyPair (the token made the key extractable or not sensitive; KeyRoll destroyed it — this token cannot keep keys from being copied)")
        }
        try refreshLogin()
        return PKCS11Key(token: self, id: id, label: label, publicKey: publicKey)
    }

    /// The key pair with `id` and `label`, or nil when the token holds no private key with them.
    /// Two private keys with both is an error (a token that made a pair twice): never a guess.
    public func key(id: [UInt8], label: String) throws -> PKCS11Key? {
        try withSession { h in
            let privs = try findKeys(h, CKO.privateKey, id, label)
            guard let priv = privs.first else { return nil }
            guard privs.count == 1 else { throw PKCS11Error(PKCS11Error.generalError, "C_FindObjects (\(privs.count) private keys carry the id and label \(label))") }
            // the public key is read from its own object when there is one, else from the private
            // key's public attributes (CKA_MODULUS and CKA_PUBLIC_EXPONENT are never sensitive)
            let source = try findKeys(h, CKO.publicKey, id, label).first ?? priv
            return PKCS11Key(token: self, id: id, label: label, publicKey: try readPublicKey(h, source))
        }
    }

    static func template(_ cls: CK_OBJECT_CLASS, _ id: [UInt8], _ label: String) -> Template {
        Template().add(CKA.class, ulong: cls).add(CKA.id, bytes: id).add(CKA.label, string: label)
    }

    /// Every key object (private or public) whose label starts with `labelPrefix`: id, label and class.
    public func objects(labelPrefix: String) throws -> [TokenObject] {
        try withSession { h in
            var out: [TokenObject] = []
            for cls in [CKO.privateKey, CKO.publicKey] {
                for o in try find(h, Template().add(CKA.class, ulong: cls)) {
                    let label = String(decoding: (try? attribute(h, o, CKA.label)) ?? [], as: UTF8.self)
                    guard label.hasPrefix(labelPrefix) else { continue }
                    // an object without a readable CKA_ID is never ours to destroy (KeyRoll always sets one)
                    guard let id = try? attribute(h, o, CKA.id), !id.isEmpty else { continue }
                    out.append(TokenObject(id: id, label: label, isPrivate: cls == CKO.privateKey))
                }
            }
            return out
        }
    }

    /// Attributes of the private key with `id` that show it cannot leave the token.
    public func protection(id: [UInt8], label: String) throws -> (sensitive: Bool, extractable: Bool, neverExtractable: Bool)? {
        try withSession { h in
            guard let priv = try findKeys(h, CKO.privateKey, id, label).first else { return nil }
            return (try attribute(h, priv, CKA.sensitive) == [1], try attribute(h, priv, CKA.extractable) == [1],
                    try attribute(h, priv, CKA.neverExtractable) == [1])
        }
    }

    /// Asks the token for the private key's secret parts (`CKA_PRIVATE_EXPONENT`, `CKA_PRIME_1`):
    /// a sensitive key must refuse (`CKR_ATTRIBUTE_SENSITIVE`). Returns the parts it gave away (none
    /// for a key generated by KeyRoll); nil when there is no such key.
    public func revealedSecretParts(id: [UInt8], label: String) throws -> [String]? {
        try withSession { h in
            guard let priv = try findKeys(h, CKO.privateKey, id, label).first else { return nil }
            return [("CKA_PRIVATE_EXPONENT", CK_ATTRIBUTE_TYPE(0x123)), ("CKA_PRIME_1", CK_ATTRIBUTE_TYPE(0x124))].compactMap { name, type in
                ((try? attribute(h, priv, type))?.isEmpty == false) ? name : nil
            }
        }
    }

    /// Destroys the key objects carrying both `id` and `label` (private first) — never an object
    /// that lacks either, so no other store's or application's key. Finding and destroying happen
    /// in one session, so no handle outlives the lookup that produced it; after a lost session the
    /// whole step runs again (destroying what is gone is no error). Objects still there afterwards
    /// are an error, never a silent success.
    public func destroyKeys(id: [UInt8], label: String, hook: SideEffectHook) throws {
        precondition(!id.isEmpty && !label.isEmpty, "a key is destroyed by its id and label, never by an empty match")
        // unload every key first (log out and in): tpm2-pkcs11 1.9 leaves a key it destroys loaded in the TPM
        try refreshLogin()
        for cls in [CKO.privateKey, CKO.publicKey] {
            try withSession { h in
                for o in try findKeys(h, cls, id, label) {
                    try hook.reach(SideEffect(.token, "C_DestroyObject"))
                    try check(module.destroyObject(h, o), "C_DestroyObject")
                    try hook.reach(SideEffect(.tokenDone, "C_DestroyObject"))
                }
            }
        }
        let left = try withSession { h in
            try findKeys(h, CKO.privateKey, id, label).count + findKeys(h, CKO.publicKey, id, label).count
        }
        guard left == 0 else { throw PKCS11Error(PKCS11Error.functionFailed, "C_DestroyObject (\(left) objects of the key are still on the token)") }
    }

    // MARK: signing

    /// Signs `message` with the private key `id`, by the mechanism that hashes and pads inside the
    /// token (`CKM_SHA256_RSA_PKCS`, `CKM_SHA256_RSA_PKCS_PSS`, …); a token that lacks it gets the
    /// digest and a raw RSA mechanism (`CKM_RSA_PKCS` with the DigestInfo, `CKM_RSA_PKCS_PSS`).
    func sign(id: [UInt8], label: String, message: [UInt8], algorithm: JWSAlgorithm) throws -> [UInt8] {
        try withSession { h in
            let keys = try findKeys(h, CKO.privateKey, id, label)
            guard keys.count == 1, let key = keys.first else {
                throw PKCS11Error(PKCS11Error.keyHandleInvalid, "C_FindObjects (\(keys.count) private keys with the id and label \(label) on the token)")
            }
            do {
                return try signOnce(h, key, mechanism: Mechanism.hashing(algorithm), data: message)
            } catch let e as PKCS11Error where e.rv == PKCS11Error.mechanismInvalid || e.rv == PKCS11Error.mechanismParamInvalid || e.rv == 0x54 /* CKR_FUNCTION_NOT_SUPPORTED */ {
                let digest = Mechanism.digest(message, algorithm)
                let data = algorithm.usesPSS ? digest : Mechanism.digestInfoPrefix(algorithm) + digest
                return try signOnce(h, key, mechanism: Mechanism.raw(algorithm), data: data)
            }
        }
    }

    private func signOnce(_ h: CK_SESSION_HANDLE, _ key: CK_OBJECT_HANDLE, mechanism: Mechanism, data: [UInt8]) throws -> [UInt8] {
        var params = mechanism.pss ?? CK_RSA_PKCS_PSS_PARAMS(hashAlg: 0, mgf: 0, sLen: 0)
        return try withUnsafeMutablePointer(to: &params) { pp in
            var mech = CK_MECHANISM(mechanism: mechanism.type, pParameter: mechanism.pss == nil ? nil : UnsafeMutableRawPointer(pp),
                                    ulParameterLen: mechanism.pss == nil ? 0 : CK_ULONG(MemoryLayout<CK_RSA_PKCS_PSS_PARAMS>.size))
            try check(module.signInit(h, &mech, key), "C_SignInit")
            var input = data
            var length: CK_ULONG = 1024
            var out = [UInt8](repeating: 0, count: 1024)
            try input.withUnsafeMutableBufferPointer { i in
                try out.withUnsafeMutableBufferPointer { o in
                    try check(module.sign(h, i.baseAddress, CK_ULONG(i.count), o.baseAddress, &length), "C_Sign")
                }
            }
            return Array(out.prefix(Int(length)))
        }
    }

    // MARK: plumbing

    private func find(_ h: CK_SESSION_HANDLE, _ template: Template) throws -> [CK_OBJECT_HANDLE] {
        try template.withAttributes { a, n in try check(module.findObjectsInit(h, a, n), "C_FindObjectsInit") }
        defer { _ = module.findObjectsFinal(h) }
        var found: [CK_OBJECT_HANDLE] = []
        var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 64)
        while true {
            var n: CK_ULONG = 0
            try batch.withUnsafeMutableBufferPointer { try check(module.findObjects(h, $0.baseAddress, CK_ULONG($0.count), &n), "C_FindObjects") }
            if n == 0 { break }
            found += batch.prefix(Int(n))
        }
        return found
    }

    /// The objects of class `cls` with `id` and `label`, each checked by reading its CKA_CLASS back:
    /// tpm2-pkcs11 (1.9) can answer a search by class with objects of the other class.
    private func findKeys(_ h: CK_SESSION_HANDLE, _ cls: CK_OBJECT_CLASS, _ id: [UInt8], _ label: String) throws -> [CK_OBJECT_HANDLE] {
        try find(h, Self.template(cls, id, label)).filter { o in
            guard let c = try? attribute(h, o, CKA.class), c.count == MemoryLayout<CK_ULONG>.size else { return false }
            return c.withUnsafeBytes { $0.loadUnaligned(as: CK_ULONG.self) } == cls
        }
    }

    private func attribute(_ h: CK_SESSION_HANDLE, _ o: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) throws -> [UInt8] {
        var a = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: 0)
        try check(module.getAttributeValue(h, o, &a, 1), "C_GetAttributeValue(0x" + String(type, radix: 16) + ")")
        guard a.ulValueLen != CK_ULONG.max else { throw PKCS11Error(PKCS11Error.attributeSensitive, "C_GetAttributeValue") }
        guard a.ulValueLen <= 1 << 16 else { throw PKCS11Error(PKCS11Error.generalError, "C_GetAttributeValue (an attribute of \(a.ulValueLen) bytes)") }
        var bytes = [UInt8](repeating: 0, count: Int(a.ulValueLen))
        try bytes.withUnsafeMutableBytes { b in
            a.pValue = b.baseAddress
            try check(module.getAttributeValue(h, o, &a, 1), "C_GetAttributeValue")
        }
        return Array(bytes.prefix(Int(a.ulValueLen)))
    }

    private func readPublicKey(_ h: CK_SESSION_HANDLE, _ o: CK_OBJECT_HANDLE) throws -> RSAPublicKey {
        try RSAPublicKey(modulus: try attribute(h, o, CKA.modulus), exponent: try attribute(h, o, CKA.publicExponent))
    }
}

/// A key object on a token, as a sweep sees it.
public struct TokenObject: Sendable, Equatable {
    public let id: [UInt8]
    public let label: String
    public let isPrivate: Bool
}

/// A key pair generated in a token: the token signs; the private key never leaves it.
public struct PKCS11Key: RSASigner {
    public let token: PKCS11Token
    /// `CKA_ID`: how KeyRoll finds the key again.
    public let id: [UInt8]
    public let label: String
    public let publicKey: RSAPublicKey

    public func signature(for message: [UInt8], algorithm: JWSAlgorithm) throws -> [UInt8] {
        try token.sign(id: id, label: label, message: message, algorithm: algorithm)
    }

    public var keyStoreKind: KeyStoreKind { .pkcs11 }
}

/// A signing mechanism and its PSS parameters.
struct Mechanism {
    let type: CK_MECHANISM_TYPE
    let pss: CK_RSA_PKCS_PSS_PARAMS?

    static func pssParams(_ a: JWSAlgorithm) -> CK_RSA_PKCS_PSS_PARAMS {
        switch a.digest {
        case .sha256: return CK_RSA_PKCS_PSS_PARAMS(hashAlg: 0x250, mgf: 2, sLen: 32)
        case .sha384: return CK_RSA_PKCS_PSS_PARAMS(hashAlg: 0x260, mgf: 3, sLen: 48)
        case .sha512: return CK_RSA_PKCS_PSS_PARAMS(hashAlg: 0x270, mgf: 4, sLen: 64)
        }
    }

    /// The mechanism that digests inside the token: CKM_SHA{256,384,512}_RSA_PKCS[_PSS].
    static func hashing(_ a: JWSAlgorithm) -> Mechanism {
        let base: CK_MECHANISM_TYPE = a.digest == .sha256 ? 0x40 : a.digest == .sha384 ? 0x41 : 0x42
        return a.usesPSS ? Mechanism(type: base + 3, pss: pssParams(a)) : Mechanism(type: base, pss: nil)
    }

    /// The raw mechanism over a digest computed here: CKM_RSA_PKCS (DigestInfo) or CKM_RSA_PKCS_PSS.
    static func raw(_ a: JWSAlgorithm) -> Mechanism {
        a.usesPSS ? Mechanism(type: 0x0D, pss: pssParams(a)) : Mechanism(type: 0x01, pss: nil)
    }

    static func digest(_ m: [UInt8], _ a: JWSAlgorithm) -> [UInt8] {
        switch a.digest {
        case .sha256: return Array(SHA256.hash(data: m))
        case .sha384: return Array(SHA384.hash(data: m))
        case .sha512: return Array(SHA512.hash(data: m))
        }
    }

    /// The DER DigestInfo header PKCS#1 v1.5 puts before the digest (RFC 8017, 9.2 note 1).
    static func digestInfoPrefix(_ a: JWSAlgorithm) -> [UInt8] {
        switch a.digest {
        case .sha256: return [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20]
        case .sha384: return [0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30]
        case .sha512: return [0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40]
        }
    }
}

@inline(__always)
func check(_ rv: CK_RV, _ function: String) throws {
    guard rv == 0 else { throw PKCS11Error(rv, function) }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
