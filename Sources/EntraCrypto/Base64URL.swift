import Foundation

/// Base64url (RFC 4648 §5) as JOSE uses it.
///
/// Encoding never emits `=` padding. Decoding comes in two strengths:
/// - ``decodeLenient(_:)`` accepts what Microsoft's real clients put on the wire: base64url *or* standard
///   base64, with or without `=` padding, with embedded whitespace or newlines (MSAL Python pads `x5t`,
///   azure-identity's async client pads whole JWT segments, early msal-go used standard base64).
/// - ``decodeStrict(_:)`` accepts only the canonical unpadded base64url alphabet (Graph rejects proofs
///   with `=` padding).
public enum Base64URL {
    public static func encode<D: DataProtocol>(_ bytes: D) -> String {
        var s = Data(bytes).base64EncodedString()
        s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while s.hasSuffix("=") { s.removeLast() }
        return s
    }

    /// Decodes canonical base64url: alphabet `A–Z a–z 0–9 - _`, no padding, no whitespace, zero unused bits.
    public static func decodeStrict(_ text: Substring) -> [UInt8]? {
        for c in text.utf8 {
            let ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 95
            if !ok { return nil }
        }
        if text.utf8.count % 4 == 1 { return nil }
        // Canonical only: unused trailing bits must be zero, so one byte string has one encoding.
        guard let bytes = decodeLenient(text), encode(bytes).utf8.elementsEqual(text.utf8) else { return nil }
        return bytes
    }

    public static func decodeStrict(_ text: String) -> [UInt8]? { decodeStrict(Substring(text)) }

    /// Decodes base64url or standard base64, padded or not, ignoring ASCII whitespace.
    public static func decodeLenient(_ text: Substring) -> [UInt8]? {
        var s = String()
        s.reserveCapacity(text.utf8.count + 3)
        var sawPadding = false
        for ch in text.unicodeScalars {
            switch ch {
            case " ", "\n", "\r", "\t": continue
            case "=": sawPadding = true; continue
            case "-": if sawPadding { return nil }; s.unicodeScalars.append("+")
            case "_": if sawPadding { return nil }; s.unicodeScalars.append("/")
            default:
                if sawPadding { return nil }  // data after padding
                guard ch.isASCII, ch.properties.isAlphabetic || ("0"..."9").contains(ch) || ch == "+" || ch == "/" else { return nil }
                s.unicodeScalars.append(ch)
            }
        }
        switch s.utf8.count % 4 {
        case 1: return nil
        case 2: s += "=="
        case 3: s += "="
        default: break
        }
        guard let data = Data(base64Encoded: s) else { return nil }
        return Array(data)
    }

    public static func decodeLenient(_ text: String) -> [UInt8]? { decodeLenient(Substring(text)) }
}

/// Standard base64 (RFC 4648 §4), as Graph's `Edm.Binary` fields (`key`, `customKeyIdentifier`) use it.
public enum Base64 {
    public static func encode<D: DataProtocol>(_ bytes: D) -> String { Data(bytes).base64EncodedString() }

    /// Decodes standard base64, tolerating embedded whitespace and newlines (the Azure CLI sends
    /// PEM bodies with line breaks as `key`).
    public static func decode(_ text: String) -> [UInt8]? {
        let cleaned = text.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: cleaned) else { return nil }
        return Array(data)
    }
}
