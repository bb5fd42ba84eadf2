import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// An append-only, fsynced log of what a provisioning run has done per app, so a run killed at
/// any point resumes without duplicates and without leaving a bootstrap certificate whose private
/// key died with the process.
public final class ProvisionLog: @unchecked Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public enum Event: String, Codable, Sendable { case intent, done }
        public var app: String
        public var event: Event
        public var keyId: String
        public var objectId: String?
        public var appId: String?
        public var bundlePath: String?
        public var time: Date
    }

    let path: String
    private let lock = NSLock()
    private let file: JSONLinesFile
    private var last: [String: Entry] = [:]

    public init(path: String, hook: SideEffectHook = .none) throws {
        self.path = path
        let d = JSONDecoder.utcDates()
        for line in JSONLinesFile.lines(at: path) {
            // a torn last line (killed mid-write) is ignored: its step is redone
            if let e = try? d.decode(Entry.self, from: Data(line)) { last[e.app] = e }
        }
        file = try JSONLinesFile(path: path, hook: hook)
    }

    public func lastEntry(_ app: String) -> Entry? { lock.withLock { last[app] } }

    public func append(_ e: Entry) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .utcISO8601
        enc.outputFormatting = [.sortedKeys]
        let bytes = Array(try enc.encode(e))
        try lock.withLock {
            try file.append(bytes)
            last[e.app] = e
        }
    }
}

/// Provisions every app of a manifest, paced by Graph's budget, resumable.
public struct ProvisionRun: Sendable {
    public let provisioner: Provisioner
    public let manifest: Manifest
    public let log: ProvisionLog
    public let limit: AdaptiveLimit
    public let keySize: RSAKeySize
    /// Passed before every file-system call on a bundle (see ``SideEffect``).
    public let hook: SideEffectHook
    let logger: Logger

    public init(provisioner: Provisioner, manifest: Manifest, log: ProvisionLog, limit: AdaptiveLimit = AdaptiveLimit(), keySize: RSAKeySize = .bits2048,
                hook: SideEffectHook = .none, logger: Logger = Logger(label: "keyroll.provision")) {
        self.hook = hook
        self.provisioner = provisioner.observingThrottling(limit)
        self.manifest = manifest
        self.log = log
        self.limit = limit
        self.keySize = keySize
        self.logger = logger
    }

    public enum Outcome: Sendable, Equatable {
        case created(appId: String)
        case bootstrapIssued(appId: String)
        case alreadyProvisioned(appId: String)
        case agentOwnsIt(appId: String)
        case needsRebootstrap(appId: String, reason: String)
        /// An app with replicas: bundles issued now, replicas already provisioned (left alone), and
        /// replicas Graph shows that the manifest no longer asks for (retire them: ``ReplicaRetirement``).
        case replicas(appId: String, created: Bool, issued: [ReplicaName], kept: [ReplicaName], beyondManifest: [ReplicaName])
    }

    public struct Report: Sendable {
        public var outcomes: [String: Outcome] = [:]
        public var failures: [String: String] = [:]
        public var seconds: Double = 0
        public var throttleEvents = 0
    }

    /// What exists already: KeyRoll-managed applications by marker.
    public func existing() async throws -> [String: Application] {
        var map: [String: Application] = [:]
        for try await app in provisioner.graph.applications(filter: OData.hasTag(Provisioner.managedTag),
                                                            select: ["id", "appId", "displayName", "tags"], pageSize: 999) {
            for tag in app.tags ?? [] where tag.hasPrefix("keyroll:app:") { map[String(tag.dropFirst("keyroll:app:".count))] = app }
        }
        return map
    }

    public func execute(progress: ProgressReporter? = nil) async throws -> Report {
        let started = Date()
        let existing = try await existing()
        let apps = manifest.apps
        let results = await BulkRunner.run(apps, limit: limit, progress: progress) { app in
            try await provisionOne(app, existing: existing[app.name])
        }
        var report = Report()
        for (app, r) in zip(apps, results) {
            switch r {
            case .success(let o): report.outcomes[app.name] = o
            case .failure(let e): report.failures[app.name] = "\(e)"
            }
        }
        report.seconds = Date().timeIntervalSince(started)
        report.throttleEvents = await limit.throttleEvents
        return report
    }

    func provisionOne(_ app: Manifest.App, existing: Application?) async throws -> Outcome {
        if let existing, AppLease.current?.objectId != existing.id, log.lastEntry(app.name)?.event != .done || app.replicas != nil {
            // an app that exists is written with a whole-list PATCH: one privileged run at a time
            return try await provisioner.withLease(objectId: existing.id, name: app.name) { try await self.provisionOne(app, existing: existing) }
        }
        if app.replicas != nil { return try await provisionReplicas(app, existing: existing) }
        let graph = provisioner.graph
        let prior = log.lastEntry(app.name)
        if prior?.event == .done, let appId = prior?.appId { return .alreadyProvisioned(appId: appId) }
        let now = graph.correctedNow
        let size = keySize, validity = manifest.bootstrapValidity
        let keyId = UUID().uuidString.lowercased()
        let tags = [Provisioner.managedTag, Provisioner.marker(for: app.name)] + app.tags + app.owners.map { "keyroll:owner:\($0)" }
        if let target = existing {
            let keys = try await graph.keyCredentials(objectID: target.id)
            // the run died after writing the bundle but before logging it: the bundle (perhaps
            // already delivered and imported) holds the registered key, so keep it
            if prior?.event == .intent, let keyId = prior?.keyId, let k = keys.first(where: { $0.keyId == keyId }),
               bundleHolds(app.bundlePath(for: nil), k) {
                try log.append(.init(app: app.name, event: .done, keyId: keyId, objectId: target.id, appId: target.appId, bundlePath: app.bundlePath(for: nil), time: now))
                return .bootstrapIssued(appId: target.appId)
            }
            // a bootstrap left behind by a run that died before writing its bundle: its key is lost
            if prior?.event == .intent, let orphan = prior?.keyId, keys.contains(where: { $0.keyId == orphan }) {
                try await provisioner.removeKeyCredential(objectID: target.id, keyId: orphan)
            } else if prior == nil {
                // one naming rule for every reader of Graph (CredentialName): a replica's bootstrap is a bootstrap too
                let names = keys.filter { $0.isValidCertificate(at: now) }.map { CredentialName.parse(displayName: $0.displayName) }
                if names.contains(where: { $0.isKeyRoll && !$0.isBootstrap }) {
                    return .agentOwnsIt(appId: target.appId)
                }
                if names.contains(where: \.isBootstrap) {
                    return .needsRebootstrap(appId: target.appId, reason: "it holds a bootstrap certificate this run did not issue; use `keyroll rebootstrap` for a new bundle")
                }
            }
            _ = try await graph.createServicePrincipal(appId: target.appId)
            let cred = try await Background.run { try Provisioner.bootstrapCredential(now: now, validity: validity, size: size) }
            try log.append(.init(app: app.name, event: .intent, keyId: keyId, objectId: target.id, appId: target.appId, time: now))
            try await provisioner.mergeKeyCredential(objectID: target.id, certificate: cred.certificate, keyId: keyId, displayName: Provisioner.bootstrapDisplayName)
            try writeBundle(app, application: target, credential: cred, keyId: keyId, now: now)
            return .bootstrapIssued(appId: target.appId)
        }
        // New application: the bootstrap certificate goes in with the create (one write, verified from its answer).
        let cred = try await Background.run { try Provisioner.bootstrapCredential(now: now, validity: validity, size: size) }
        try log.append(.init(app: app.name, event: .intent, keyId: keyId, time: now))
        let entry: JSONValue = .object(["keyId": .string(keyId), "type": "AsymmetricX509Cert", "usage": "Verify",
                                        "key": .string(Base64.encode(cred.certificate.der)), "displayName": .string(Provisioner.bootstrapDisplayName)])
        let created = try await graph.createApplication(displayName: app.name, tags: tags.filter { $0 != Provisioner.marker(for: app.name) },
                                                        keyCredentials: [entry], marker: Provisioner.marker(for: app.name), notes: app.notes)
        guard created.keyCredentials?.contains(where: { $0.keyId == keyId && $0.matches(cred.certificate) }) == true else {
            // found by its marker after a lost answer, but without this run's key: register it the merge way
            try await provisioner.mergeKeyCredential(objectID: created.id, certificate: cred.certificate, keyId: keyId, displayName: Provisioner.bootstrapDisplayName)
            _ = try await graph.createServicePrincipal(appId: created.appId)
            try writeBundle(app, application: created, credential: cred, keyId: keyId, now: now)
            return .created(appId: created.appId)
        }
        _ = try await graph.createServicePrincipal(appId: created.appId)
        try writeBundle(app, application: created, credential: cred, keyId: keyId, now: now)
        return .created(appId: created.appId)
    }

    func writeBundle(_ app: Manifest.App, replica: ReplicaName? = nil, application: Application, credential: SigningCredential, keyId: String, now: Date) throws {
        let e = provisioner.graph.endpoints
        let path = app.bundlePath(for: replica)
        let bundle = try BootstrapBundle(tenantId: e.tenant, authorityHost: e.authorityHost, graphBaseURL: e.graphBaseURL, applicationObjectId: application.id,
                                     appId: application.appId, displayName: app.name, replica: replica, credential: credential, keyId: keyId,
                                     createdAt: now, createdBy: nil)
        try SecureFiles.ensurePrivateDirectory((path as NSString).deletingLastPathComponent)
        try SecureFiles.writeAtomically(try bundle.encoded(), to: path, hook: hook)
        try log.append(.init(app: Self.logKey(app.name, replica), event: .done, keyId: keyId, objectId: application.id, appId: application.appId,
                             bundlePath: path, time: now))
    }

    /// Whether the bundle at `path` was written for `key`: its keyId and its certificate are the ones
    /// Graph lists. (Any other content, or no file, is no evidence.)
    func bundleHolds(_ path: String, _ key: KeyCredential) -> Bool { Self.bundleHolds(path, key) }

    static func bundleHolds(_ path: String, _ key: KeyCredential) -> Bool {
        guard let data = FileManager.default.contents(atPath: path), let bundle = try? BootstrapBundle.decode(Array(data)),
              bundle.bootstrap.keyId == key.keyId, let cert = try? bundle.signingCredential().certificate else { return false }
        return key.matches(cert)
    }

    /// The provision log's key for an app's replica (`web@r2`; the app's name for a single host).
    static func logKey(_ name: String, _ replica: ReplicaName?) -> String {
        replica.map { name + String(CredentialName.replicaSeparator) + $0.rawValue } ?? name
    }

    /// An app with `replicas: N`: one bootstrap certificate and bundle per replica r1…rN, all in
    /// one write (the create, or one read-merge-PATCH-verify). A replica already provisioned —
    /// by this log, or because Graph shows keys with its marker — is left alone, so raising N
    /// (scale out) issues only the new replicas' bundles and never touches a sibling's key.
    /// Replicas Graph shows beyond N are reported, never removed here: scale in goes through the
    /// audited ``ReplicaRetirement``.
    func provisionReplicas(_ app: Manifest.App, existing: Application?) async throws -> Outcome {
        let graph = provisioner.graph
        let now = graph.correctedNow
        var keys: [KeyCredential] = []
        if let existing { keys = try await graph.keyCredentials(objectID: existing.id) }
        let inGraph = Set(keys.compactMap { k -> ReplicaName? in
            let p = CredentialName.parse(displayName: k.displayName)
            return p.isKeyRoll ? p.replica : nil
        })
        var toIssue: [ReplicaName] = [], kept: [ReplicaName] = [], orphans: Set<String> = []
        for r in app.replicaNames {
            let prior = log.lastEntry(Self.logKey(app.name, r))
            if prior?.event == .done { kept.append(r); continue }
            if prior?.event == .intent, let keyId = prior?.keyId, let k = keys.first(where: { $0.keyId == keyId }), bundleHolds(app.bundlePath(for: r), k) {
                // written but not logged: its host may already run on it; never revoke it
                try log.append(.init(app: Self.logKey(app.name, r), event: .done, keyId: keyId, objectId: existing?.id, appId: existing?.appId,
                                     bundlePath: app.bundlePath(for: r), time: now))
                kept.append(r)
                continue
            }
            if prior?.event == .intent, let orphan = prior?.keyId, keys.contains(where: { $0.keyId == orphan }) {
                orphans.insert(orphan)  // its run died before writing the bundle: the private key is lost
            } else if prior == nil, inGraph.contains(r) {
                kept.append(r)  // provisioned elsewhere (or the log was lost): its host owns it
                continue
            }
            toIssue.append(r)
        }
        let wanted = Set(app.replicaNames)
        let beyond = inGraph.filter { !wanted.contains($0) }.sorted()
        if let target = existing, !orphans.isEmpty {
            let drop = orphans
            try await provisioner.removeKeyCredentials(objectID: target.id) { drop.contains($0.keyId) }
        }
        if toIssue.isEmpty, let target = existing {
            return .replicas(appId: target.appId, created: false, issued: [], kept: kept, beyondManifest: beyond)
        }
        let limit = manifest.keyCredentialLimit
        if keys.count - orphans.count + toIssue.count > limit {
            throw Manifest.ManifestError("'\(app.name)' holds \(keys.count - orphans.count) keyCredentials; \(toIssue.count) more bootstrap certificates would pass the limit of \(limit). Retire stale replicas first (keyroll audit lists them).")
        }
        let size = keySize, validity = manifest.bootstrapValidity
        var issued: [(ReplicaName, SigningCredential, String)] = []
        for r in toIssue {
            let cred = try await Background.run { try Provisioner.bootstrapCredential(replica: r, now: now, validity: validity, size: size) }
            issued.append((r, cred, UUID().uuidString.lowercased()))
        }
        // Intent for every replica first: a run that dies before a bundle is written leaves a key
        // the next run finds by its keyId and removes (its private key died with the process).
        for (r, _, keyId) in issued {
            try log.append(.init(app: Self.logKey(app.name, r), event: .intent, keyId: keyId, objectId: existing?.id, appId: existing?.appId, time: now))
        }
        let newKeys = issued.map { Provisioner.NewKey(certificate: $0.1.certificate, keyId: $0.2, displayName: Provisioner.bootstrapDisplayName(replica: $0.0)) }
        let application: Application
        if let target = existing {
            _ = try await graph.createServicePrincipal(appId: target.appId)
            try await provisioner.mergeKeyCredentials(objectID: target.id, adding: newKeys)
            application = target
        } else {
            let tags = [Provisioner.managedTag] + app.tags + app.owners.map { "keyroll:owner:\($0)" }
            let created = try await graph.createApplication(displayName: app.name, tags: tags, keyCredentials: newKeys.map(\.entry),
                                                            marker: Provisioner.marker(for: app.name), notes: app.notes)
            let missing = newKeys.filter { n in created.keyCredentials?.contains(where: { $0.keyId == n.keyId && $0.matches(n.certificate) }) != true }
            // found by its marker after a lost answer, without this run's keys: register them the merge way
            if !missing.isEmpty { try await provisioner.mergeKeyCredentials(objectID: created.id, adding: missing) }
            _ = try await graph.createServicePrincipal(appId: created.appId)
            application = created
        }
        for (r, cred, keyId) in issued {
            try writeBundle(app, replica: r, application: application, credential: cred, keyId: keyId, now: now)
        }
        return .replicas(appId: application.appId, created: existing == nil, issued: issued.map(\.0), kept: kept, beyondManifest: beyond)
    }

    /// What a run would do, the Graph writes it needs, and how long that takes within the budget.
    public struct Plan: Sendable {
        public var toCreate: [String] = []
        public var toBootstrap: [String] = []
        public var done: [String] = []
        public var writes: Int { toCreate.count * 2 + toBootstrap.count * 2 }
        public var reads: Int { 1 + toBootstrap.count * 3 }
        /// Seconds at Graph's documented write budget (3,000 writes per 150 s per app + tenant) and
        /// the 150/min `$select=keyCredentials` cap.
        public var minimumSeconds: Double { max(Double(writes) / 3000 * 150, Double(toBootstrap.count * 2) / 150 * 60) }
    }

    public func plan() async throws -> Plan {
        let existing = try await existing()
        var p = Plan()
        for app in manifest.apps {
            if log.lastEntry(app.name)?.event == .done { p.done.append(app.name) }
            else if existing[app.name] != nil { p.toBootstrap.append(app.name) }
            else { p.toCreate.append(app.name) }
        }
        return p
    }
}

extension Provisioner {
    public static let bootstrapDisplayName = CredentialName.displayName(cn: CredentialName.bootstrapCN)

    /// `CN=keyroll-bootstrap`, or `CN=keyroll-bootstrap@r2` for replica r2.
    public static func bootstrapDisplayName(replica: ReplicaName?) -> String {
        CredentialName.displayName(cn: CredentialName.bootstrapCN(replica: replica))
    }

    static func bootstrapCredential(replica: ReplicaName? = nil, now: Date, validity: TimeInterval, size: RSAKeySize) throws -> SigningCredential {
        try SigningCredential.generate(size: size, subject: .init(commonName: CredentialName.bootstrapCN(replica: replica)), notBefore: now.addingTimeInterval(-300),
                                       notAfter: now.addingTimeInterval(validity))
    }

    /// The same provisioner, telling `limit` about every 429.
    public func observingThrottling(_ limit: AdaptiveLimit) -> Provisioner {
        Provisioner(graph: graph.observingThrottling { _ in Task { await limit.throttled() } }, clock: clock, logger: logger)
    }

    /// Read → PATCH without `keyId` → verify it is gone and nothing else is.
    public func removeKeyCredential(objectID: String, keyId: String) async throws {
        try await removeKeyCredentials(objectID: objectID) { $0.keyId == keyId }
    }

    /// Read → PATCH without the keys `remove` picks → verify they are gone and every other key the
    /// PATCH was built on is still there. The read is made again before every attempt (see
    /// ``GraphClient/updateKeyCredentials(id:merge:)``), and `remove` is asked again each time.
    /// Returns the keys removed.
    @discardableResult
    public func removeKeyCredentials(objectID: String, where remove: @escaping @Sendable (KeyCredential) -> Bool) async throws -> [KeyCredential] {
        let before = try await graph.updateKeyCredentials(id: objectID, precondition: leaseCheck(objectID)) { current in current.filter { !remove($0) }.map(Self.patchEntry) }
        let removed = before.filter(remove)
        AppLease.current.map { if $0.objectId == objectID { $0.ledger.remove(removed.map(\.keyId)) } }
        let after = Set(try await graph.keyCredentials(objectID: objectID).map(\.keyId))
        let stillThere = removed.map(\.keyId).filter(after.contains)
        guard stillThere.isEmpty else {
            throw EntraError(kind: .protocolViolation, operation: "removeKeyCredential",
                             message: "after the PATCH Graph still shows \(stillThere.count) of the removed credentials")
        }
        return removed
    }

    /// A keyCredential as sent back in a merge PATCH: with its `key` when Graph returned it.
    static func patchEntry(_ k: KeyCredential) -> JSONValue {
        var o: [String: JSONValue] = ["keyId": .string(k.keyId), "type": .string(k.type ?? "AsymmetricX509Cert"), "usage": .string(k.usage ?? "Verify")]
        if let key = k.key { o["key"] = .string(key) }
        if let d = k.displayName { o["displayName"] = .string(d) }
        if let c = k.customKeyIdentifier { o["customKeyIdentifier"] = .string(c) }
        if let s = k.startDateTime { o["startDateTime"] = .string(UTCTime.iso(s)) }
        if let e = k.endDateTime { o["endDateTime"] = .string(UTCTime.iso(e)) }
        return .object(o)
    }
}
