import EntraCrypto
import Foundation
import KeyRollPrimitives

extension RollPolicy {
    /// A policy file KeyRoll refuses: unknown field, wrong type, not JSON, too large.
    public struct FileError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// The largest policy file read.
    public static let maximumFileBytes = 65_536

    /// The file's fields (days and seconds, as people write them) and how each sets the policy.
    static let fileFields: [String: @Sendable (inout RollPolicy, Double) throws -> Void] = [
        "validityDays": { $0.validity = $1 * 86_400 },
        "rollAtFraction": { $0.rollAtFraction = $1 },
        "jitterFraction": { $0.jitterFraction = $1 },
        "keySize": { p, v in
            guard v == v.rounded(), let bits = Int(exactly: v) else { throw FileError(description: "keySize must be 2048, 3072 or 4096, not \(v)") }
            p.keySize = try RSAKeySize(bits: bits)
        },
        "verifySuccesses": { p, v in
            guard v == v.rounded(), let n = Int(exactly: v) else { throw FileError(description: "verifySuccesses must be a whole number, not \(v)") }
            p.verifySuccesses = n
        },
        "verifyTimeoutSeconds": { $0.verifyTimeout = $1 },
        "warnDays": { $0.warnTimeToCliff = $1 * 86_400 },
        "criticalDays": { $0.criticalTimeToCliff = $1 * 86_400 },
        "tenantMaximumValidityDays": { $0.tenantMaximumValidity = $1 * 86_400 },
        "minimumRollMarginDays": { $0.minimumRollMargin = $1 * 86_400 },
        "reloadHookGraceSeconds": { $0.reloadHookGrace = $1 },
        "reloadHookTimeoutSeconds": { $0.reloadHookTimeout = $1 },
        "backdateSeconds": { $0.backdate = $1 },
        "settleSeconds": { $0.settle = $1 },
        // the name of earlier versions, when only replicated apps settled
        "replicaSettleSeconds": { $0.settle = $1 },
        "retainedKeyHours": { $0.retainedKeyWindow = $1 * 3600 },
        "registrationCheckSeconds": { $0.registrationCheckInterval = $1 },
    ]

    /// The known field names, for messages and docs.
    public static var fileFieldNames: [String] { (fileFields.keys.sorted() + ["subject"]) }

    /// Defaults overridden by a policy file (a JSON object such as `{"validityDays": 365}`). Unknown
    /// fields and wrong types are refused, naming the field. The result is not yet validated
    /// (flags may still change it); call ``validated()``.
    public static func parsingFile(_ bytes: [UInt8]) throws -> RollPolicy {
        guard bytes.count <= maximumFileBytes else { throw FileError(description: "the file is over \(maximumFileBytes / 1024) KiB; a policy is a few lines of JSON") }
        guard case .object(let fields)? = try? JSONValue.parse(bytes, maxDepth: 4) else {
            throw FileError(description: "not a JSON object. Expected JSON like {\"validityDays\": 365, \"rollAtFraction\": 0.667}.")
        }
        var p = RollPolicy()
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
            if name == "subject" {
                guard case .string(let text) = value else { throw FileError(description: "subject must be a string") }
                p.subject = text
                continue
            }
            guard let apply = fileFields[name] else {
                throw FileError(description: "unknown field \"\(name.prefix(64))\". Known fields: \(fileFieldNames.joined(separator: ", ")).")
            }
            guard let number = value.doubleValue else {
                throw FileError(description: "\(name) must be a number, not \(String(decoding: value.serialized(), as: UTF8.self).prefix(40))")
            }
            do { try apply(&p, number) } catch let e as FileError { throw e } catch { throw FileError(description: "\(name): \(error)") }
        }
        return p
    }
}
