import EntraClient
import Foundation
import KeyRollPrimitives

/// The rule every removeKey of an agent obeys: **an agent removes only keys it created, or the
/// bootstrap key it was handed, on its own replica.** On an app with several replicas the other
/// keys belong to siblings on other hosts; removing one would lock that sibling out.
///
/// A key may go only when Graph lists it under `keyId` and
/// 1. its certificate's thumbprint is a credential in this store's journal, with origin
///    `bootstrap` or `keyroll`, or a tombstone of a key this store removed (the journal knows this
///    replica's thumbprints and no others), and
/// 2. its `displayName`, when it carries a KeyRoll replica marker, names this replica.
///
/// Pure: no I/O. The roller checks it before every removeKey.
public enum RemovalGuard {
    public struct Refused: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public static func check(keyId: String, in keys: [KeyCredential], journal: Journal, replica: ReplicaName?) throws {
        guard let key = keys.first(where: { $0.keyId == keyId }) else {
            throw Refused(description: "refusing to remove key \(keyId): Graph does not list it, so nothing shows it is this replica's")
        }
        let own = journal.credentials.first { record in key.matches(thumbprint: record.thumbprint) }
        let tombstoned = journal.tombstones.contains { key.matches(thumbprint: $0.thumbprint) }
        guard tombstoned || (own.map { [.bootstrap, .keyroll].contains($0.origin) } ?? false) else {
            throw Refused(description: "refusing to remove key \(keyId) (\(key.displayName ?? "no name")): this replica did not create it and was not handed it")
        }
        let marker = CredentialName.parse(displayName: key.displayName)
        if marker.isKeyRoll, let theirs = marker.replica, theirs != replica {
            throw Refused(description: "refusing to remove key \(keyId): Graph names it for replica \(theirs), not \(replica?.rawValue ?? "this single-host app")")
        }
    }
}
