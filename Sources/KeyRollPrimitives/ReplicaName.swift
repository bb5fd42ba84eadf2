/// The name of one replica of an application: one host (or container) with its own key pair,
/// rolled by its own agent. Names are short and plain because they are written where Graph shows
/// them, in the certificate's subject CN and the keyCredential's `displayName` (see
/// ``CredentialName``), and into file names of bundles.
///
/// Rule: 1 to 16 characters, lowercase ASCII letters, digits and `-`, starting with a letter.
/// The provisioner numbers replicas `r1`, `r2`, … (``numbered(_:)``).
public struct ReplicaName: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public init(_ raw: String) throws {
        let ok = !raw.isEmpty && raw.count <= 16 && raw.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
            && ("a"..."z").contains(raw.unicodeScalars.first!)
        guard ok else {
            throw Invalid(description: "'\(raw.prefix(40))' is not a replica name: use 1 to 16 lowercase letters, digits or '-', starting with a letter (for example r1, r2, web-3)")
        }
        rawValue = raw
    }

    /// `r1`, `r2`, …: the names the provisioner gives (index from 1).
    public static func numbered(_ index: Int) -> ReplicaName {
        // swiftlint:disable:next force_try
        try! ReplicaName("r\(max(1, index))")
    }

    /// The index of a numbered replica (`r3` → 3), nil for other names.
    public var number: Int? {
        guard rawValue.hasPrefix("r"), let n = Int(rawValue.dropFirst()), n >= 1, "r\(n)" == rawValue else { return nil }
        return n
    }

    public var description: String { rawValue }

    /// Numbered replicas sort by number (r2 before r10), then other names alphabetically.
    public static func < (a: ReplicaName, b: ReplicaName) -> Bool {
        switch (a.number, b.number) {
        case let (x?, y?): return x < y
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return a.rawValue < b.rawValue
        }
    }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(raw) } catch let e as Invalid {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: e.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// How KeyRoll names the certificates it makes, so anyone reading Graph (the audit, an operator in
/// the portal) can tell whose each key is:
///
/// | certificate | subject CN / keyCredential displayName |
/// |---|---|
/// | bootstrap of a single-host app | `keyroll-bootstrap` |
/// | bootstrap of replica r2 | `keyroll-bootstrap@r2` |
/// | an agent's own key | the policy's subject (default `keyroll-{appId}`) |
/// | an agent's own key, replica r2 | the policy's subject + `@r2` |
///
/// The `displayName` is the CN with `CN=` in front (what Entra shows for an uploaded certificate).
public enum CredentialName {
    public static let prefix = "keyroll-"
    public static let bootstrapCN = "keyroll-bootstrap"
    public static let replicaSeparator: Character = "@"

    /// The CN `cn` marked for `replica` (unchanged for a single-host app).
    public static func cn(_ cn: String, replica: ReplicaName?) -> String {
        guard let replica else { return cn }
        return cn + String(replicaSeparator) + replica.rawValue
    }

    public static func bootstrapCN(replica: ReplicaName?) -> String { cn(bootstrapCN, replica: replica) }

    /// What a key's displayName carries after its CN when the agent generated the key inside a
    /// PKCS#11 token (the certificate's subject says the same: `OU=keyroll-pkcs11`).
    public static let tokenMarker = ", OU=keyroll-pkcs11"

    public static func displayName(cn: String, inToken: Bool = false) -> String { "CN=" + cn + (inToken ? tokenMarker : "") }

    /// What a keyCredential's `displayName` says about it.
    public struct Parsed: Equatable, Sendable {
        /// Named by KeyRoll (`CN=keyroll-…`).
        public var isKeyRoll: Bool
        /// A provisioner's bootstrap certificate.
        public var isBootstrap: Bool
        /// The replica it belongs to; nil for a single-host app's key (or a foreign key).
        public var replica: ReplicaName?
        /// The agent says it generated the key inside a PKCS#11 token (a claim, not an attestation).
        public var inToken: Bool

        public init(isKeyRoll: Bool, isBootstrap: Bool, replica: ReplicaName?, inToken: Bool = false) {
            self.isKeyRoll = isKeyRoll
            self.isBootstrap = isBootstrap
            self.replica = replica
            self.inToken = inToken
        }
    }

    public static func parse(displayName: String?) -> Parsed {
        var name = displayName ?? ""
        if name.hasPrefix("CN=") { name.removeFirst(3) }
        let inToken = name.hasSuffix(tokenMarker)
        if inToken { name.removeLast(tokenMarker.count) }
        var replica: ReplicaName?
        if let at = name.lastIndex(of: replicaSeparator), let r = try? ReplicaName(String(name[name.index(after: at)...])) {
            replica = r
            name = String(name[..<at])
        }
        let keyroll = name.hasPrefix(prefix)
        return Parsed(isKeyRoll: keyroll, isBootstrap: keyroll && name == bootstrapCN, replica: keyroll ? replica : nil, inToken: keyroll && inToken)
    }
}
