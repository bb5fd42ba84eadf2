import CPKCS11

/// PKCS#11 attribute and object constants KeyRoll uses (PKCS#11 v2.40).
enum CKA {
    static let `class`: CK_ATTRIBUTE_TYPE = 0x000
    static let token: CK_ATTRIBUTE_TYPE = 0x001
    static let `private`: CK_ATTRIBUTE_TYPE = 0x002
    static let label: CK_ATTRIBUTE_TYPE = 0x003
    static let keyType: CK_ATTRIBUTE_TYPE = 0x100
    static let id: CK_ATTRIBUTE_TYPE = 0x102
    static let sensitive: CK_ATTRIBUTE_TYPE = 0x103
    static let sign: CK_ATTRIBUTE_TYPE = 0x108
    static let verify: CK_ATTRIBUTE_TYPE = 0x10A
    static let modulus: CK_ATTRIBUTE_TYPE = 0x120
    static let modulusBits: CK_ATTRIBUTE_TYPE = 0x121
    static let publicExponent: CK_ATTRIBUTE_TYPE = 0x122
    static let extractable: CK_ATTRIBUTE_TYPE = 0x162
    static let neverExtractable: CK_ATTRIBUTE_TYPE = 0x164
    static let alwaysSensitive: CK_ATTRIBUTE_TYPE = 0x165
}

enum CKO {
    static let publicKey: CK_OBJECT_CLASS = 2
    static let privateKey: CK_OBJECT_CLASS = 3
}

/// An attribute template: values kept alive for as long as the template is, laid out as the
/// `CK_ATTRIBUTE` array a module reads (or, for a query, writes into).
final class Template {
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    private(set) var attributes: [CK_ATTRIBUTE] = []

    init() {}

    deinit { for b in buffers { b.deallocate() } }

    /// Adds an attribute holding `bytes`.
    @discardableResult
    func add(_ type: CK_ATTRIBUTE_TYPE, bytes: [UInt8]) -> Template {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        b.copyBytes(from: bytes)
        buffers.append(b)
        attributes.append(CK_ATTRIBUTE(type: type, pValue: b.baseAddress, ulValueLen: CK_ULONG(bytes.count)))
        return self
    }

    @discardableResult
    func add(_ type: CK_ATTRIBUTE_TYPE, bool: Bool) -> Template { add(type, bytes: [bool ? 1 : 0]) }

    @discardableResult
    func add(_ type: CK_ATTRIBUTE_TYPE, ulong: CK_ULONG) -> Template { add(type, bytes: withUnsafeBytes(of: ulong) { Array($0) }) }

    @discardableResult
    func add(_ type: CK_ATTRIBUTE_TYPE, string: String) -> Template { add(type, bytes: Array(string.utf8)) }

    /// Calls `body` with the template as a C array and its length.
    func withAttributes<R>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws -> R) rethrows -> R {
        try attributes.withUnsafeMutableBufferPointer { try body($0.baseAddress, CK_ULONG($0.count)) }
    }
}
