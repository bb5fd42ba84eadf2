import EntraCrypto
import Foundation
import KeyRollPrimitives

/// A `keyCredential` as a client sends it (addKey body, POST/PATCH `keyCredentials`), validated
/// into a ``StoredKeyCredential``.
struct KeyCredentialInput {
    var keyId: String?
    var keyText: String?
    var type: String
    var usage: String
    var displayName: String?
    var customKeyIdentifier: String?
    var start: Date?
    var end: Date?

    static func parse(_ v: JSONValue) throws -> KeyCredentialInput {
        guard case .object(let o) = v else { throw GraphError.badRequest("Invalid value specified for property 'keyCredentials' of resource 'Application'.") }
        func str(_ k: String) -> String? { o[k]?.stringValue }
        func date(_ k: String) throws -> Date? {
            guard let v = o[k], v != .null else { return nil }
            guard let s = v.stringValue, let d = WireTime.parse(s) else {
                throw GraphError.badRequest("Invalid value specified for property '\(k)' of resource 'KeyCredential'.")
            }
            return d
        }
        guard let type = str("type") else { throw GraphError.badRequest("Invalid value specified for property 'type' of resource 'KeyCredential'.") }
        guard let usage = str("usage") else {
            throw GraphError.badRequest("The value for the property \"usage\" in one of your credentials is invalid. Acceptable values are Sign, Verify.")
        }
        return KeyCredentialInput(keyId: str("keyId"), keyText: str("key"), type: type, usage: usage, displayName: str("displayName"),
                                  customKeyIdentifier: str("customKeyIdentifier"), start: try date("startDateTime"), end: try date("endDateTime"))
    }

    /// The addKey body: `keyCredential` (type, usage, key required) and `passwordCredential`.
    static func forAddKey(_ body: [String: JSONValue]) throws -> KeyCredentialInput {
        guard let kc = body["keyCredential"], kc != .null else {
            throw GraphError.badRequest("Invalid value specified for property 'keyCredential' of resource 'AddKey'.")
        }
        let input = try parse(kc)
        guard input.keyText?.isEmpty == false else { throw GraphError.badRequest("Invalid value specified for property 'key' of resource 'KeyCredential'.") }
        if input.type == "X509CertAndPassword" {
            guard body["passwordCredential"]?["secretText"]?.stringValue != nil else {
                throw GraphError.badRequest("Invalid value specified for property 'passwordCredential' of resource 'AddKey'.")
            }
        } else if let pc = body["passwordCredential"], pc != .null {
            throw GraphError.badRequest("Invalid value specified for property 'passwordCredential' of resource 'AddKey'.")
        }
        return input
    }

    /// A validated stored credential. `existing` lets a PATCH entry with a known keyId and
    /// `key: null` keep the stored certificate.
    func make(keyId given: String?, existing: [StoredKeyCredential], now: Date, activeAt: Date, settings: EmulatorSettings) throws -> StoredKeyCredential {
        switch (type, usage) {
        case ("AsymmetricX509Cert", "Verify"), ("X509CertAndPassword", "Sign"), ("AsymmetricX509Cert", "Sign"), ("Symmetric", "Sign"), ("Symmetric", "Verify"): break
        case (_, "Verify"), (_, "Sign"):
            throw GraphError.badRequest("Invalid value specified for property 'type' of resource 'KeyCredential'.")
        default:
            throw GraphError.badRequest("The value for the property \"usage\" in one of your credentials is invalid. Acceptable values are Sign, Verify.")
        }
        if type == "AsymmetricX509Cert", usage == "Sign" {
            throw GraphError.badRequest("The value for the property \"usage\" in one of your credentials is invalid. Acceptable values are Sign, Verify.")
        }
        let keyId = (keyId ?? given)?.lowercased() ?? UUID().uuidString.lowercased()
        guard UUID(uuidString: keyId) != nil else { throw GraphError.badRequest("Invalid value specified for property 'keyId' of resource 'KeyCredential'.") }
        let der: [UInt8]
        if let text = keyText {
            guard let d = Base64.decode(text), !d.isEmpty else {
                throw GraphError.badRequest("Invalid value specified for property 'key' of resource 'KeyCredential'.")
            }
            der = d
            // A PATCH re-sending an entry it read (same keyId, same certificate) keeps it as it is,
            // propagation included, unless the setting says Entra propagates it anew (UNCONFIRMED).
            if let old = existing.first(where: { $0.keyId == keyId }), old.key == der {
                if let s = start, abs(s.timeIntervalSince(old.startDateTime)) > 1 { throw GraphError(400, "KeyNotUpdatable", "Update to existing credential with KeyId '\(keyId)' is not allowed.") }
                if let e = end, abs(e.timeIntervalSince(old.endDateTime)) > 1 { throw GraphError(400, "KeyNotUpdatable", "Update to existing credential with KeyId '\(keyId)' is not allowed.") }
                guard settings.patchRepropagatesExistingKeys else { return old }
                var again = old
                again.activeAt = max(old.activeAt, activeAt)
                return again
            }
        } else if let old = existing.first(where: { $0.keyId == keyId }) {
            // Echo of an existing entry: keep it; altering it is refused as Graph refuses it.
            if let s = start, abs(s.timeIntervalSince(old.startDateTime)) > 1 { throw GraphError(400, "KeyNotUpdatable", "Update to existing credential with KeyId '\(keyId)' is not allowed.") }
            if let e = end, abs(e.timeIntervalSince(old.endDateTime)) > 1 { throw GraphError(400, "KeyNotUpdatable", "Update to existing credential with KeyId '\(keyId)' is not allowed.") }
            return old
        } else {
            throw GraphError.badRequest("Invalid value specified for property 'key' of resource 'KeyCredential'.")
        }
        var startDate = start, endDate = end
        var name = displayName
        if type != "Symmetric" {
            let cert: X509Certificate
            do { cert = try X509Certificate(der: der) } catch EntraCryptoError.keyTooSmall {
                // Graph stores weak certificates; the token endpoint refuses them (AADSTS50032).
                return StoredKeyCredential(keyId: keyId, key: der, customKeyIdentifier: Thumbprint.sha1(of: der).bytes, displayName: displayName,
                                           startDateTime: start ?? now, endDateTime: end ?? now.addingTimeInterval(365 * 86_400),
                                           type: type, usage: usage, activeAt: activeAt)
            } catch {
                throw GraphError.badRequest("Invalid value specified for property 'key' of resource 'KeyCredential'.")
            }
            // Dates default to the certificate's; supplied dates must lie within it.
            if let s = startDate, s < cert.notBefore.addingTimeInterval(-1) {
                throw GraphError.badRequest("Key credential start date is invalid.")
            }
            if let e = endDate, e > cert.notAfter.addingTimeInterval(1) { throw GraphError.badRequest("Key credential end date is invalid.") }
            startDate = startDate ?? cert.notBefore
            endDate = endDate ?? cert.notAfter
            if name == nil { name = "CN=" + (cert.certificate.subject.description.split(separator: ",").first(where: { $0.hasPrefix("CN=") })?.dropFirst(3).description ?? cert.subject) }
        }
        guard let s = startDate, let e = endDate, s < e else { throw GraphError.badRequest("Key credential end date is invalid.") }
        if settings.enforceOneYearKeyLifetime, e.timeIntervalSince(s) > 366 * 86_400 { throw GraphError.badRequest("Key credential end date is invalid.") }
        let custom: [UInt8]
        if let c = customKeyIdentifier {
            guard let b = Base64.decode(c) else { throw GraphError.badRequest("Invalid value specified for property 'customKeyIdentifier' of resource 'KeyCredential'.") }
            custom = b
        } else {
            custom = Thumbprint.sha1(of: der).bytes
        }
        if let n = name, n.count > 90 { name = String(n.prefix(90)) }
        return StoredKeyCredential(keyId: keyId, key: der, customKeyIdentifier: custom, displayName: name, startDateTime: s, endDateTime: e,
                                   type: type, usage: usage, activeAt: activeAt)
    }

    /// A whole `keyCredentials` collection (POST/PATCH semantics: the result replaces the old list).
    static func list(_ v: JSONValue?, existing: [StoredKeyCredential], now: Date, activeAt: Date, settings: EmulatorSettings) throws -> [StoredKeyCredential] {
        guard let v, v != .null else { return [] }
        guard case .array(let items) = v else {
            throw GraphError.badRequest("Invalid value specified for property 'keyCredentials' of resource 'Application'.")
        }
        guard items.count <= settings.maxCredentialItems else { throw GraphError.sizeExceeded }
        var out: [StoredKeyCredential] = []
        for item in items {
            let input = try parse(item)
            let k = try input.make(keyId: nil, existing: existing, now: now, activeAt: activeAt, settings: settings)
            guard !out.contains(where: { $0.keyId == k.keyId }) else {
                throw GraphError.badRequest("Duplicate keyId '\(k.keyId)' in keyCredentials.")
            }
            out.append(k)
        }
        return out
    }
}
