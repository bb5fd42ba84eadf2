/// An RFC 7512 `pkcs11:` URI naming a token (and, for KeyRoll, the module that serves it):
///
/// ```
/// pkcs11:token=keyroll;serial=1a2b?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyroll/pin
/// ```
///
/// Path attributes select the token (`token`, `serial`, `manufacturer`, `model`, `slot-id`); query
/// attributes say how to reach it (`module-path`, or `module-name` looked up in the system's module
/// folders) and where the PIN is (`pin-source`: a file). `pin-value` is refused: a PIN in a URI ends
/// up in command lines, shell histories and process listings. Without `pin-source` the PIN is read
/// from the environment (`KEYROLL_PKCS11_PIN`). Values are percent-decoded. Pure: no I/O.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    public var token: String?
    public var serial: String?
    public var manufacturer: String?
    public var model: String?
    public var slotID: UInt?
    public var modulePath: String?
    public var moduleName: String?
    /// `file:/path` or a plain path: the file holding the user PIN.
    public var pinSource: String?

    /// The original text, for messages and the store's record.
    public let text: String

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    static let pathAttributes: Set<String> = ["token", "serial", "manufacturer", "model", "slot-id", "slot-description", "slot-manufacturer",
                                              "library-description", "library-manufacturer", "library-version", "object", "id", "type"]
    static let queryAttributes: Set<String> = ["module-path", "module-name", "pin-source", "pin-value"]

    public init(_ text: String) throws {
        self.text = text
        guard text.hasPrefix("pkcs11:") else {
            throw Invalid(description: "'\(Self.redacted(text))' is not a pkcs11: URI (RFC 7512), e.g. pkcs11:token=keyroll?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyroll/pin")
        }
        let rest = text.dropFirst("pkcs11:".count)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? ""
        let query = parts.count > 1 ? String(parts[1]) : ""
        var seen: Set<String> = []
        for (section, separator, known) in [(path, Character(";"), Self.pathAttributes), (query, Character("&"), Self.queryAttributes)] {
            for attribute in section.split(separator: separator) where !attribute.isEmpty {
                let kv = attribute.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(kv[0]).lowercased()
                guard kv.count == 2 else { throw Invalid(description: "the pkcs11: URI attribute '\(name)' has no value (write \(name)=VALUE)") }
                guard known.contains(name) else {
                    throw Invalid(description: "the pkcs11: URI attribute '\(name)' is not one KeyRoll reads here; use \(known.sorted().joined(separator: ", "))")
                }
                guard seen.insert(name).inserted else { throw Invalid(description: "the pkcs11: URI names '\(name)' twice") }
                let value = try Self.percentDecoded(String(kv[1]), attribute: name)
                switch name {
                case "token": token = value
                case "serial": serial = value
                case "manufacturer": manufacturer = value
                case "model": model = value
                case "slot-id":
                    guard let n = UInt(value) else { throw Invalid(description: "the pkcs11: URI's slot-id '\(value)' is not a number") }
                    slotID = n
                case "module-path": modulePath = value
                case "module-name": moduleName = value
                case "pin-source": pinSource = value
                case "pin-value":
                    throw Invalid(description: "the pkcs11: URI carries pin-value: a PIN in a URI or on a command line is readable by other users (ps, shell history). "
                                  + "Put the PIN in a file readable only by the agent's user and name it with pin-source=file:/path, or set KEYROLL_PKCS11_PIN in the agent's environment")
                case "object", "id", "type":
                    throw Invalid(description: "the pkcs11: URI names an object (\(name)=); KeyRoll names its own keys. Give the token only (token=, serial=)")
                default: break  // descriptive attributes: accepted, not used to select
                }
            }
        }
        guard modulePath != nil || moduleName != nil else {
            throw Invalid(description: "the pkcs11: URI does not say which module serves the token: add ?module-path=/path/to/module.so (e.g. /usr/lib/softhsm/libsofthsm2.so)")
        }
        guard token != nil || serial != nil || slotID != nil else {
            throw Invalid(description: "the pkcs11: URI does not name a token: add token=LABEL (or serial=, slot-id=); pkcs11-tool --list-slots shows them")
        }
        if let p = modulePath, !p.hasPrefix("/") {
            throw Invalid(description: "the pkcs11: URI's module-path '\(p)' is not absolute; give the module's full path")
        }
        if let n = moduleName, n.contains("/") || n.isEmpty {
            throw Invalid(description: "the pkcs11: URI's module-name '\(n)' must be a bare name (e.g. softhsm2); use module-path for a path")
        }
    }

    /// The file holding the PIN (`pin-source=file:/p` or `pin-source=/p`), if the URI names one.
    public var pinFile: String? {
        guard let s = pinSource else { return nil }
        return s.hasPrefix("file:") ? String(s.dropFirst(5)) : s
    }

    /// Whether a token with these properties is the one this URI selects.
    public func selects(label: String, serial tokenSerial: String, manufacturer tokenManufacturer: String, model tokenModel: String, slot: UInt) -> Bool {
        if let token, token != label { return false }
        if let serial, serial != tokenSerial { return false }
        if let manufacturer, manufacturer != tokenManufacturer { return false }
        if let model, model != tokenModel { return false }
        if let slotID, slotID != slot { return false }
        return true
    }

    public var description: String { Self.redacted(text) }

    /// The URI with any pin-value removed, for messages.
    static func redacted(_ text: String) -> String {
        guard let r = text.range(of: "pin-value=") else { return text }
        let end = text[r.upperBound...].firstIndex(where: { $0 == "&" || $0 == ";" }) ?? text.endIndex
        return text.replacingCharacters(in: r.upperBound..<end, with: "REDACTED")
    }

    static func percentDecoded(_ s: String, attribute: String) throws -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let hi = hexValue(it[it.startIndex]), let lo = hexValue(it[it.startIndex + 1]) else {
                    throw Invalid(description: "the pkcs11: URI's \(attribute) has a bad percent escape")
                }
                bytes.append(hi << 4 | lo)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw Invalid(description: "the pkcs11: URI's \(attribute) is not UTF-8 once decoded")
        }
        return text
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
