import Foundation

/// Something that happened to an identity: for logs, the demo's timeline and tests.
public struct AgentEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case imported, generated, stored, added, visible, notYetActive, verified, switched, reloaded, retired, finished
        case abandoning, abandoned, retry, alarm, reconciled, reloadHookFailed, swept, settling
        /// The registration watch and its repairs (docs/replicas.md, "Recoverable by construction").
        case reregistering, repairing, repaired, removedAgain, released, watched
    }
    public var time: Date
    public var appId: String
    public var kind: Kind
    public var detail: String

    public init(time: Date, appId: String, kind: Kind, detail: String) {
        self.time = time
        self.appId = appId
        self.kind = kind
        self.detail = detail
    }
}

public enum RollOutcome: Sendable, Equatable {
    case notDue(next: Date)
    case rolled(newThumbprint: String)
    case abandoned(reason: String)
}
