import Foundation

/// Where KeyRoll may send credentials. Client assertions, bearer tokens and addKey proofs can take
/// over an application, and a proof is not bound to the key it adds: anyone who reads one within
/// its ten minutes can register a key of their own. So every URL KeyRoll talks to must be `https`,
/// except a loopback address (`127.0.0.0/8`, `::1`, `localhost`), where nothing crosses a network.
/// Checked before any traffic: when a URL is configured, and again for every request.
public enum SecureURL {
    /// A URL KeyRoll refuses to talk to, with the setting it came from and the fix.
    public struct Refused: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Throws unless `url` is `https://…`, or `http://` to a loopback host. `what` names where the
    /// URL came from (`--authority`, `the bundle's graphBaseURL`), so the error says what to fix.
    public static func check(_ url: String, what: String) throws {
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased(), let host = c.host, !host.isEmpty else {
            throw Refused(description: "\(what) (\(Redaction.url(url))) is not an absolute http(s) URL. Give one like https://login.microsoftonline.com.")
        }
        if c.user != nil || c.password != nil {
            throw Refused(description: "\(what) carries a user name or password in the URL; KeyRoll refuses credentials in URLs.")
        }
        switch scheme {
        case "https": return
        case "http" where isLoopback(host: host): return
        case "http":
            throw Refused(description: "\(what) is plain http to \(host), which is not this machine: tokens, client assertions and addKey proofs "
                          + "would cross the network unencrypted. Use https:// (plain http is allowed only to 127.0.0.1, ::1 or localhost).")
        default:
            throw Refused(description: "\(what) uses the scheme '\(scheme)'; KeyRoll speaks https (or http to this machine only).")
        }
    }

    /// `127.0.0.0/8`, `::1` and `localhost` (and its subdomains, which resolve to loopback by RFC 6761).
    public static func isLoopback(host raw: String) -> Bool {
        let host = raw.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" || host.hasSuffix(".localhost") || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && UInt8(p) != nil }) else { return false }
        return parts[0] == "127"
    }

    /// Scheme, host and port, lower-cased, with default ports filled in: what "same origin" compares.
    public static func origin(_ url: String) -> String? {
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased(), let host = c.host?.lowercased(), !host.isEmpty else { return nil }
        let port = c.port ?? (scheme == "https" ? 443 : scheme == "http" ? 80 : -1)
        return "\(scheme)://\(host):\(port)"
    }

    /// Whether `url` has the same origin as `base` (an `@odata.nextLink` must, or the bearer token
    /// would follow it to another host).
    public static func sameOrigin(_ url: String, _ base: String) -> Bool {
        guard let a = origin(url), let b = origin(base) else { return false }
        return a == b
    }
}

/// OData literals. Every string KeyRoll puts into a `$filter` or a key segment goes through
/// ``quote(_:)``: a name holding `'` cannot change the query (`O'Brien` stays one string literal).
public enum OData {
    /// `s` as an OData string literal: in single quotes, each `'` doubled.
    public static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    /// `$filter` matching objects that carry `tag`.
    public static func hasTag(_ tag: String) -> String { "tags/any(t:t eq \(quote(tag)))" }
}

/// Identifiers KeyRoll puts into URL paths. An application's object id, its appId and the tenant
/// are read from files (bundles, identity.json) and end up inside `/applications/{id}/addKey` and
/// `/{tenant}/oauth2/v2.0/token`; a value holding `/`, `?` or `..` would send a token and a proof
/// to another endpoint. Entra's ids are GUIDs; a tenant may also be a verified domain name.
public enum EntraIdentifier {
    /// A value KeyRoll refuses to use as an Entra identifier, with where it came from.
    public struct Refused: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Whether `s` is a GUID in its 8-4-4-4-12 hexadecimal form.
    public static func isGUID(_ s: String) -> Bool {
        let groups = s.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return false }
        return groups.allSatisfy { $0.allSatisfy { $0.isASCII && $0.isHexDigit } }
    }

    /// Whether `s` names a tenant: a GUID, or a domain name (labels of letters, digits and `-`).
    public static func isTenant(_ s: String) -> Bool {
        if isGUID(s) { return true }
        let labels = s.split(separator: ".", omittingEmptySubsequences: false)
        guard s.count <= 253, !labels.isEmpty else { return false }
        return labels.allSatisfy { l in
            !l.isEmpty && l.count <= 63 && l.first != "-" && l.last != "-" && l.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// Throws unless `value` is a GUID; `what` names the field and its file.
    public static func checkGUID(_ value: String, what: String) throws {
        guard isGUID(value) else {
            throw Refused(description: "\(what) ('\(value.prefix(80))') is not a GUID like 00000000-0000-0000-0000-000000000000. "
                          + "Entra's object ids and appIds are GUIDs; the file was edited or damaged. Ask the provisioner for a new bundle (keyroll rebootstrap).")
        }
    }

    /// Throws unless `value` is a tenant GUID or domain name; `what` names the field and its file.
    public static func checkTenant(_ value: String, what: String) throws {
        guard isTenant(value) else {
            throw Refused(description: "\(what) ('\(value.prefix(80))') is neither a tenant GUID nor a domain name like contoso.onmicrosoft.com. "
                          + "Fix the setting, or ask the provisioner for a new bundle (keyroll rebootstrap).")
        }
    }
}
