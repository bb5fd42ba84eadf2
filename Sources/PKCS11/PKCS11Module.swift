import CPKCS11
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A PKCS#11 module (a shared library such as `libsofthsm2.so`), loaded at run time with `dlopen`
/// and initialised once per process. Nothing links it: a binary not configured for PKCS#11 never
/// loads one.
final class PKCS11Module: @unchecked Sendable {
    let path: String
    let initialize: CK_C_Initialize
    let getSlotList: CK_C_GetSlotList
    let getTokenInfo: CK_C_GetTokenInfo
    let openSession: CK_C_OpenSession
    let closeSession: CK_C_CloseSession
    let login: CK_C_Login
    let logout: CK_C_Logout
    let generateKeyPair: CK_C_GenerateKeyPair
    let getAttributeValue: CK_C_GetAttributeValue
    let findObjectsInit: CK_C_FindObjectsInit
    let findObjects: CK_C_FindObjects
    let findObjectsFinal: CK_C_FindObjectsFinal
    let signInit: CK_C_SignInit
    let sign: CK_C_Sign
    let destroyObject: CK_C_DestroyObject

    private static let loaded = Mutex<[String: PKCS11Module]>([:])

    /// The module at `path`, loaded and initialised on first use (later calls share it).
    static func load(path: String) throws -> PKCS11Module {
        try loaded.withLock { modules in
            if let m = modules[path] { return m }
            let m = try PKCS11Module(path: path)
            modules[path] = m
            return m
        }
    }

    /// Where `module-name=NAME` is looked for: the multiarch `pkcs11` folder p11-kit uses, the
    /// library folders, and SoftHSM's own folder.
    static func candidates(name: String) -> [String] {
        let dirs = ["/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/aarch64-linux-gnu/pkcs11", "/usr/lib/pkcs11", "/usr/lib64/pkcs11",
                    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/softhsm", "/usr/lib"]
        let files = name.hasSuffix(".so") ? [name] : ["\(name).so", "lib\(name).so", "lib\(name)_pkcs11.so", "\(name)-pkcs11.so"]
        return dirs.flatMap { d in files.map { d + "/" + $0 } }
    }

    static func resolve(_ uri: PKCS11URI) throws -> String {
        if let p = uri.modulePath { return p }
        let name = uri.moduleName ?? ""
        for c in candidates(name: name) where access(c, R_OK) == 0 { return c }
        throw PKCS11URI.Invalid(description: "no PKCS#11 module named '\(name)' in the usual folders; give its path with module-path=")
    }

    private init(path: String) throws {
        self.path = path
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw PKCS11URI.Invalid(description: "the PKCS#11 module \(path) cannot be loaded (\(why)); install it or correct module-path")
        }
        func symbol<T>(_ name: String, as: T.Type) throws -> T {
            guard let p = dlsym(handle, name) else {
                throw PKCS11URI.Invalid(description: "\(path) is not a PKCS#11 module: it has no \(name)")
            }
            return unsafeBitCast(p, to: T.self)
        }
        initialize = try symbol("C_Initialize", as: CK_C_Initialize.self)
        getSlotList = try symbol("C_GetSlotList", as: CK_C_GetSlotList.self)
        getTokenInfo = try symbol("C_GetTokenInfo", as: CK_C_GetTokenInfo.self)
        openSession = try symbol("C_OpenSession", as: CK_C_OpenSession.self)
        closeSession = try symbol("C_CloseSession", as: CK_C_CloseSession.self)
        login = try symbol("C_Login", as: CK_C_Login.self)
        logout = try symbol("C_Logout", as: CK_C_Logout.self)
        generateKeyPair = try symbol("C_GenerateKeyPair", as: CK_C_GenerateKeyPair.self)
        getAttributeValue = try symbol("C_GetAttributeValue", as: CK_C_GetAttributeValue.self)
        findObjectsInit = try symbol("C_FindObjectsInit", as: CK_C_FindObjectsInit.self)
        findObjects = try symbol("C_FindObjects", as: CK_C_FindObjects.self)
        findObjectsFinal = try symbol("C_FindObjectsFinal", as: CK_C_FindObjectsFinal.self)
        signInit = try symbol("C_SignInit", as: CK_C_SignInit.self)
        sign = try symbol("C_Sign", as: CK_C_Sign.self)
        destroyObject = try symbol("C_DestroyObject", as: CK_C_DestroyObject.self)
        // the module may be called from several threads; it uses the system's locking
        var args = CK_C_INITIALIZE_ARGS(CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil, flags: 0x2 /* CKF_OS_LOCKING_OK */, pReserved: nil)
        let rv = initialize(&args)
        guard rv == 0 || rv == PKCS11Error.cryptokiAlreadyInitialized else { throw PKCS11Error(rv, "C_Initialize") }
    }
}
