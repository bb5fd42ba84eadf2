import EntraClient
import Foundation
import KeyRollPrimitives

/// One privileged run at a time per application, across processes and machines (two operators, a
/// provision re-run beside a retire). Two privileged runs whose whole-list PATCHes of keyCredentials
/// interleave drop each other's keys: a new replica's bootstrap vanishes after its bundle was
/// written, or a retired replica's keys come back.
///
/// The lease is a tag on the application object, `keyroll:lease:<run id>:<expiry, Unix seconds>`:
/// - **acquire**: a run that finds another run's unexpired lease is refused, naming it; otherwise it
///   writes its own (a tags-only PATCH that also drops expired leases) and, after
///   ``Provisioner/leaseConfirmDelay``, reads the tags again. A PATCH replaces the whole tag list,
///   so when two runs wrote at the same moment only one lease survives, and the other run backs off.
/// - **check**: before every keyCredentials PATCH attempt (inside the body's age bound, see
///   ``GraphClient/maximumBasisAge``) the run reads the tags again and stops if its lease is gone
///   or expired; a run paused past its lease cannot write on top of the run that took over.
/// - **release**: the tag is removed at the end (best effort: an expired lease is ignored and
///   cleaned up by the next run).
///
/// Graph has no compare-and-swap on applications, so this detects and serialises, it does not
/// fence: the agents' registration watch repairs what a write that slips through does.
public struct AppLease: Sendable {
    public static let prefix = "keyroll:lease:"
    /// The lease held by the current task, consulted by ``Provisioner`` before each PATCH.
    @TaskLocal public static var current: AppLease?

    public let objectId: String
    public let runId: String
    public let expires: Date
    let graph: GraphClient
    /// What this run's PATCHes meant to add and remove, for the re-read after them.
    let ledger = Ledger()

    /// The keys a run's PATCHes added and removed.
    final class Ledger: @unchecked Sendable {
        private let lock = NSLock()
        private var _added: [Provisioner.NewKey] = []
        private var _removed: Set<String> = []
        func add(_ keys: [Provisioner.NewKey]) { lock.withLock { _added += keys } }
        func remove(_ keyIds: [String]) { lock.withLock { _removed.formUnion(keyIds) } }
        var added: [Provisioner.NewKey] { lock.withLock { _added } }
        var removed: Set<String> { lock.withLock { _removed } }
    }

    public var tag: String { Self.prefix + runId + ":" + String(Int(expires.timeIntervalSince1970)) }

    /// Another run holds the application.
    public struct Held: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// `(run id, expiry)` of a lease tag; nil for any other tag.
    public static func parse(_ tag: String) -> (runId: String, expires: Date)? {
        guard tag.hasPrefix(prefix) else { return nil }
        let rest = tag.dropFirst(prefix.count)
        guard let colon = rest.lastIndex(of: ":"), let seconds = Double(rest[rest.index(after: colon)...]), seconds.isFinite else { return nil }
        let runId = String(rest[..<colon])
        guard !runId.isEmpty else { return nil }
        return (runId, Date(timeIntervalSince1970: seconds))
    }

    static func tags(_ graph: GraphClient, _ objectId: String) async throws -> [String] {
        try await graph.application(id: objectId, select: ["id", "appId", "tags"]).tags ?? []
    }

    /// Takes the lease on `objectId` for `duration`, or throws ``Held``.
    public static func acquire(graph: GraphClient, objectId: String, name: String, duration: TimeInterval, confirmDelay: Double) async throws -> AppLease {
        let now = graph.correctedNow
        let before = try await tags(graph, objectId)
        if let other = before.compactMap(parse).first(where: { $0.expires > now }) {
            throw Held(description: "another privileged KeyRoll run (\(other.runId)) holds \(name) until \(UTCTime.iso(other.expires)); wait for it to finish, or, if it died, until its lease expires. Two runs at once would drop each other's keys.")
        }
        let lease = AppLease(objectId: objectId, runId: UUID().uuidString.lowercased(), expires: now.addingTimeInterval(duration), graph: graph)
        try await graph.updateApplication(id: objectId, ["tags": .array((before.filter { parse($0) == nil } + [lease.tag]).map { .string($0) })])
        try await graph.sleeper.sleep(seconds: confirmDelay)
        let after = try await tags(graph, objectId)
        guard after.contains(lease.tag), !after.compactMap(parse).contains(where: { $0.runId != lease.runId && $0.expires > graph.correctedNow }) else {
            await lease.release()
            throw Held(description: "another privileged KeyRoll run took \(name) at the same moment; nothing was changed. Run this again once it has finished.")
        }
        return lease
    }

    /// Throws ``Held`` unless this lease is still on the application and unexpired.
    public func check() async throws {
        guard graph.correctedNow < expires else {
            throw Held(description: "this run's lease on the application expired at \(UTCTime.iso(expires)) (was the process paused?); nothing more is written. Run it again.")
        }
        guard try await Self.tags(graph, objectId).contains(tag) else {
            throw Held(description: "another privileged KeyRoll run took over this run's lease on the application; nothing more is written. Run it again once the other run has finished.")
        }
    }

    /// Removes the lease tag (and any expired lease); failures are ignored: it expires anyway.
    public func release() async {
        guard let current = try? await Self.tags(graph, objectId) else { return }
        let now = graph.correctedNow
        let kept = current.filter { t in t != tag && (Self.parse(t).map { $0.expires > now } ?? true) }
        guard kept != current else { return }
        try? await graph.updateApplication(id: objectId, ["tags": .array(kept.map { .string($0) })])
    }
}

extension Provisioner {
    /// Runs `body` holding the lease on application `objectId` (see ``AppLease``); the lease is
    /// released afterwards, also when `body` throws.
    public func withLease<T: Sendable>(objectId: String, name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        if let held = AppLease.current, held.objectId == objectId { return try await body() }
        let lease = try await AppLease.acquire(graph: graph, objectId: objectId, name: name, duration: leaseDuration, confirmDelay: leaseConfirmDelay)
        do {
            let result = try await AppLease.$current.withValue(lease) { () async throws -> T in
                let r = try await body()
                try await recheck(lease, name: name)
                return r
            }
            await lease.release()
            return result
        } catch {
            await lease.release()
            throw error
        }
    }

    /// After a run's PATCHes, `recheckDelay` later, Graph is read again (reads are eventually
    /// consistent, and another writer may have landed a stale list since): a key the run added
    /// that is gone is merged again (its bundle is already written: a host may depend on it), and a
    /// key it removed that is back is removed again. Both are logged as warnings.
    func recheck(_ lease: AppLease, name: String) async throws {
        let added = lease.ledger.added, removed = lease.ledger.removed
        guard !added.isEmpty || !removed.isEmpty else { return }
        try await graph.sleeper.sleep(seconds: recheckDelay)
        let keys = try await graph.keyCredentials(objectID: lease.objectId)
        let vanished = added.filter { n in !keys.contains { $0.keyId == n.keyId && $0.matches(n.certificate) } }
        let back = keys.filter { removed.contains($0.keyId) }.map(\.keyId)
        if !vanished.isEmpty {
            logger.warning("keys this run added vanished after its PATCH (another writer's stale list?); adding them again",
                           metadata: ["app": "\(name)", "keyIds": "\(vanished.map(\.keyId))"])
            try await mergeKeyCredentials(objectID: lease.objectId, adding: vanished)
        }
        if !back.isEmpty {
            logger.warning("keys this run removed came back after its PATCH (another writer's stale list?); removing them again",
                           metadata: ["app": "\(name)", "keyIds": "\(back)"])
            let drop = Set(back)
            _ = try await removeKeyCredentials(objectID: lease.objectId) { drop.contains($0.keyId) }
        }
    }

    /// The check a whole-list PATCH of `objectId` runs before each attempt: the current task's lease
    /// on it, if it holds one.
    func leaseCheck(_ objectId: String) -> (@Sendable () async throws -> Void)? {
        guard let lease = AppLease.current, lease.objectId == objectId else { return nil }
        return { try await lease.check() }
    }
}
