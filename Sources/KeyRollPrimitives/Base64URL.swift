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
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    /// Byte → 6-bit value for both alphabets (`+`/`-` → 62, `/`/`_` → 63); 0xFF elsewhere.
    static let decodeTable: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8.enumerated() { t[Int(c)] = UInt8(i) }
        t[Int(UInt8(ascii: "+"))] = 62; t[Int(UInt8(ascii: "-"))] = 62
        t[Int(UInt8(ascii: "/"))] = 63; t[Int(UInt8(ascii: "_"))] = 63
        return t
    }()

    public static func encode<D: DataProtocol>(_ bytes: D) -> String {
        let input = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        if input.count - i == 1 {
            let n = UInt32(input[i]) << 16
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)]]
        } else if input.count - i == 2 {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
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
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0, sawPadding = false, count = 0
        for c in text.utf8 {
            switch c {
            case 32, 10, 13, 9: continue
            case 61: sawPadding = true; continue  // '='
            default:
                if sawPadding { return nil }  // data after padding
                let v = decodeTable[Int(c)]
                if v == 0xFF { return nil }
                acc = acc << 6 | UInt32(v)
                bits += 6
                count += 1
                if bits >= 8 {
                    bits -= 8
                    out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
                }
            }
        }
        if count % 4 == 1 { return nil }
        return out
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
