import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

extension Provisioner {
    /// Tag on every application KeyRoll adopted (beside ``managedTag``): it existed before KeyRoll
    /// and keeps the credentials it had (secrets, foreign certificates).
    public static let adoptedTag = "keyroll:adopted"
}

/// The pure part of `keyroll adopt`: whether KeyRoll understands an existing application's
/// credentials, and which certificate lifetimes it may give the app's agent.
public enum AdoptionRules {
    /// What adopt may do with one application.
    public enum Assessment: Sendable, Equatable {
        /// KeyRoll understands every credential it holds: mark it and issue the bootstraps it lacks.
        case adoptable(Plan)
        /// KeyRoll provisioned it (`keyroll:managed` without `keyroll:adopted`): nothing to adopt.
        case alreadyManaged(String)
        /// It holds something KeyRoll does not understand; nothing is done to it. Says why.
        case refused(String)
    }

    public struct Plan: Sendable, Equatable {
        /// `keyroll:managed` or `keyroll:adopted` is still missing.
        public var needsMark: Bool
        /// The replicas (nil: the single host) for which Graph already lists a KeyRoll key (a
        /// bootstrap or an agent's), valid or not.
        public var replicasWithKeys: [ReplicaName?]
        /// Client secrets, and certificates KeyRoll did not make: kept exactly as they are.
        public var secrets: Int
        public var foreignCertificates: Int
        public var keyCredentials: Int
    }

    /// Assesses `app` (read with its `keyCredentials`, `passwordCredentials` and `tags`) for
    /// adoption on `wanted` (`[nil]`: one host; `[r1, r2, …]`: one bootstrap per replica).
    ///
    /// Understood: client secrets (any), certificates (`AsymmetricX509Cert`, usage `Verify`), and
    /// KeyRoll's own keys on an app KeyRoll marked. Anything else is refused, with the reason: a
    /// key without a type, a symmetric or other non-certificate key, a signing key (usage `Sign`),
    /// a key with a malformed keyId or without dates, KeyRoll-named keys on an app KeyRoll never
    /// marked, or replica keys that do not fit the hosts asked for.
    public static func assess(app: Application, replicas wanted: [ReplicaName?], now: Date) -> Assessment {
        let tags = Set(app.tags ?? [])
        let managed = tags.contains(Provisioner.managedTag), adopted = tags.contains(Provisioner.adoptedTag)
        if managed && !adopted {
            return .alreadyManaged("already managed by KeyRoll (provisioned, not adopted): nothing to adopt; `keyroll provision` and `keyroll rebootstrap` look after it")
        }
        let keys = app.keyCredentials ?? []
        var foreign = 0
        var keyRollReplicas: [ReplicaName?] = []
        for k in keys {
            let label = "keyCredential \(k.keyId)\(k.displayName.map { " ('\($0.prefix(90))')" } ?? "")"
            guard EntraIdentifier.isGUID(k.keyId) else {
                return .refused("\(label) has a keyId that is not a GUID; KeyRoll does not understand it and changes nothing on this app")
            }
            guard let type = k.type, !type.isEmpty else {
                return .refused("\(label) has no type; KeyRoll understands only certificates (AsymmetricX509Cert, usage Verify) and client secrets, and changes nothing on this app. Look at the key in the Entra portal (Certificates & secrets) and remove it if it is not needed")
            }
            guard type == "AsymmetricX509Cert" else {
                let what = type == "Symmetric" ? "a symmetric key" : "a key of type \(type.prefix(40))"
                return .refused("\(label) is \(what); KeyRoll understands only certificates (AsymmetricX509Cert, usage Verify) and client secrets, and a whole-list write of keyCredentials could alter such a key, so it changes nothing on this app. Move whatever uses it to a certificate or a secret and remove it, then adopt the app")
            }
            guard k.usage == "Verify" else {
                return .refused("\(label) is a certificate with usage \(k.usage.map { String($0.prefix(20)) } ?? "(none)") (a signing key, e.g. for token encryption or SAML), not a sign-in credential; KeyRoll does not understand it and changes nothing on this app")
            }
            guard let start = k.startDateTime, let end = k.endDateTime, start < end else {
                return .refused("\(label) has no valid start and end date; KeyRoll does not understand it and changes nothing on this app")
            }
            let name = CredentialName.parse(displayName: k.displayName)
            if name.isKeyRoll { keyRollReplicas.append(name.replica) } else { foreign += 1 }
        }
        if !keyRollReplicas.isEmpty && !managed {
            return .refused("it holds KeyRoll-named keys (CN=keyroll-…) but is not tagged \(Provisioner.managedTag): either the tag was removed from an app KeyRoll managed, or another tool uses KeyRoll's names. KeyRoll changes nothing on it; check it with `keyroll audit`, and restore the tags \(Provisioner.managedTag) and \(Provisioner.adoptedTag) if the keys are KeyRoll's")
        }
        let singleHost = wanted == [nil]
        let named = Set(keyRollReplicas.compactMap { $0 })
        if singleHost, !named.isEmpty {
            return .refused("it runs on several hosts (KeyRoll keys of replicas \(named.sorted().map(\.rawValue).joined(separator: ", "))); adopt it with --replicas N (or a manifest's replicas) so no host gets an unmarked key")
        }
        if !singleHost, keyRollReplicas.contains(where: { $0 == nil }) {
            return .refused("it runs on one host (a KeyRoll key without a replica marker); adopt it without --replicas, or retire that host's key first")
        }
        var with: [ReplicaName?] = []
        for r in wanted where keyRollReplicas.contains(where: { $0 == r }) { with.append(r) }
        return .adoptable(Plan(needsMark: !(managed && adopted), replicasWithKeys: with, secrets: app.passwordCredentials?.count ?? 0,
                               foreignCertificates: foreign, keyCredentials: keys.count))
    }

    /// The lifetimes adopt gives one app.
    public struct LifetimeChoice: Sendable, Equatable {
        /// Of the bootstrap certificate (backdate included, it fits inside the cap).
        public var bootstrapValidity: TimeInterval
        /// The most the app's agent may give a certificate (written into the bundle); nil: no limit known.
        public var maximumCertificateValidity: TimeInterval?
        /// Where the limit came from, for the operator and the audit trail.
        public var source: String
        /// Set when the limit is too short for an agent's default roll policy.
        public var warning: String?
    }

    /// How far before now a bootstrap certificate starts (``Provisioner/bootstrapCredential``).
    static let bootstrapBackdate: TimeInterval = 300
    /// Kept between a certificate's whole lifetime and the policy's maximum (clock steps, rounding).
    static let lifetimeSlack: TimeInterval = 60
    /// The shortest certificate lifetime an agent's default roll policy works with: 2 days of
    /// margin after the latest roll at 2/3 + 5 % of the lifetime.
    public static let defaultAgentMinimumValidity: TimeInterval = 2 * 86_400 / (1 - 2.0 / 3.0 - 0.05)

    /// Chooses the lifetimes for an app under `limits` (nil: the policies could not be read, and
    /// `unreadable` says why) and the operator's `--max-certificate-days` (`operatorCap`). The
    /// limit is the lower of the two; without either a readable policy or the operator's limit,
    /// adopt refuses: it cannot prove its lifetimes are inside the policy.
    public static func chooseLifetimes(limits: AppCredentialLimits?, unreadable: String? = nil, operatorCap: TimeInterval?,
                                       requestedBootstrap: TimeInterval) throws -> LifetimeChoice {
        func days(_ t: TimeInterval) -> String { let d = t / 86_400; return d.rounded() == d ? "\(Int(d))" : String(format: "%.2f", d) }
        guard limits != nil || operatorCap != nil else {
            throw PrivilegedActionRefused(description: unreadable ?? "the app management policies could not be read; pass --max-certificate-days N with the limit you know applies")
        }
        let policyCap = limits?.maxCertificateLifetime
        let cap: TimeInterval?
        let source: String
        switch (policyCap, operatorCap) {
        case (let p?, let o?) where o < p:
            cap = o
            source = "--max-certificate-days \(days(o)) (inside: \(limits!.certificateSummary))"
        case (let p?, _):
            cap = p
            source = limits!.certificateSummary
        case (nil, let o?):
            cap = o
            source = "--max-certificate-days \(days(o)) (" + (limits == nil ? "the app management policies could not be read" : "no app management policy limits certificate lifetimes") + ")"
        case (nil, nil):
            cap = nil
            source = limits!.certificateSummary
        }
        guard requestedBootstrap.isFinite, requestedBootstrap >= 3600 else {
            throw PrivilegedActionRefused(description: "a bootstrap validity of \(requestedBootstrap) s is too short; give at least 1 hour")
        }
        guard let cap else { return LifetimeChoice(bootstrapValidity: requestedBootstrap, maximumCertificateValidity: nil, source: source) }
        guard cap.isFinite, cap >= 86_400 else {
            throw PrivilegedActionRefused(description: "certificates may live at most \(days(cap)) days here (\(source)); an agent needs at least 1 day to roll, so KeyRoll cannot manage this app. Ask the tenant's administrator for a longer asymmetricKeyLifetime")
        }
        let bootstrap = min(requestedBootstrap, cap - bootstrapBackdate - lifetimeSlack)
        var warning: String?
        if cap < defaultAgentMinimumValidity {
            warning = "certificates may live at most \(days(cap)) days: an agent with the default roll policy (roll at 2/3, 2 days of margin) refuses to start with that; give its policy a lower rollAtFraction or minimumRollMarginDays"
        }
        return LifetimeChoice(bootstrapValidity: bootstrap, maximumCertificateValidity: cap, source: source, warning: warning)
    }

    /// How adopt names a replica in messages: `r2`, or `(single host)`.
    public static func label(_ r: ReplicaName?) -> String { r?.rawValue ?? "(single host)" }
}

/// `keyroll adopt`: brings existing applications under KeyRoll's management, one at a time or in
/// bulk, privileged and audited like ``Rebootstrap``, idempotent and resumable like ``ProvisionRun``.
///
/// Per application, holding its lease (``AppLease``): the audit trail's intent (who, why, the app,
/// the replicas, the lifetimes chosen and the policy they came from), then the tags
/// `keyroll:managed` and `keyroll:adopted` (merged into its tags, none dropped), its service
/// principal, one bootstrap certificate per replica (read-merge-PATCH-verify: its secrets and
/// foreign certificates stay exactly as they are) and its bundle (0600), then the outcome.
/// The run log (a ``ProvisionLog``) records each bootstrap's keyId before it is registered and
/// its bundle after it is written, so a run killed anywhere is finished by the next one: a
/// bootstrap whose bundle was never written (its private key died with the run) is removed and
/// issued again; one whose bundle was written is kept.
public struct Adoption: Sendable {
    /// One application to adopt, and on how many hosts.
    public struct Target: Sendable, Equatable {
        public var application: Application
        /// nil: one host (one unmarked bootstrap); N: replicas r1…rN, one bundle each.
        public var replicas: Int?
        /// More tags to add (a manifest's tags, and `keyroll:owner:…` for its owners).
        public var extraTags: [String]

        public init(application: Application, replicas: Int? = nil, extraTags: [String] = []) {
            self.application = application
            self.replicas = replicas
            self.extraTags = extraTags
        }

        public var replicaNames: [ReplicaName?] { replicas.map { n in (0..<n).map { ReplicaName.numbered($0 + 1) } } ?? [nil] }
        public var name: String { application.displayName ?? application.appId }
    }

    public let provisioner: Provisioner
    public let auditLogPath: String
    public let log: ProvisionLog
    /// Where bundles are written: `{name}.{appId}.json`, `{name}.{appId}.r2.json` (0700 folder).
    public let bundleDir: String
    public let limit: AdaptiveLimit
    /// Passed before every file-system call on the audit trail and the bundles (see ``SideEffect``).
    public let hook: SideEffectHook
    public let reason: String
    public let operatorName: String
    /// The bootstrap's validity asked for; it is shortened to fit the app's certificate limit.
    public var bootstrapValidity: TimeInterval = 2 * 86_400
    /// `--max-certificate-days`: the operator's limit, used when the policies cannot be read, and
    /// never exceeded otherwise.
    public var operatorMaximumCertificateValidity: TimeInterval?
    public var keySize: RSAKeySize = .bits2048
    public var keyCredentialLimit = ReplicaCapacity.defaultKeyCredentialLimit
    let logger: Logger

    public init(provisioner: Provisioner, auditLogPath: String, log: ProvisionLog, bundleDir: String, reason: String, operator who: String,
                limit: AdaptiveLimit = AdaptiveLimit(), hook: SideEffectHook = .none, logger: Logger = Logger(label: "keyroll.adopt")) {
        self.provisioner = provisioner.observingThrottling(limit)
        self.auditLogPath = auditLogPath
        self.log = log
        self.bundleDir = bundleDir
        self.reason = reason
        self.operatorName = who
        self.limit = limit
        self.hook = hook
        self.logger = logger
    }

    public typealias Refused = PrivilegedActionRefused

    // MARK: selection

    /// How the operator names the applications to adopt.
    public enum Selector: Sendable, Equatable {
        /// appId, object id, or display name (which must name exactly one application).
        case app(String)
        /// Every application carrying this tag.
        case tag(String)
        /// Every application whose display name starts with this (case-insensitively, as Graph filters).
        case namePrefix(String)
    }

    static let listSelect = ["id", "appId", "displayName", "tags", "createdDateTime"]
    static let fullSelect = ["id", "appId", "displayName", "tags", "createdDateTime", "keyCredentials", "passwordCredentials"]

    /// The applications `selectors` name, each once, in order. The whole selection is resolved
    /// before anything is written: a name that matches no application, or several, is refused.
    public static func resolve(_ selectors: [Selector], in graph: GraphClient) async throws -> [Application] {
        var out: [Application] = [], seen = Set<String>()
        func add(_ a: Application) { if seen.insert(a.id).inserted { out.append(a) } }
        for s in selectors {
            switch s {
            case .app(let name):
                add(try await find(name, in: graph))
            case .tag(let tag):
                guard !tag.isEmpty else { throw Refused(description: "--tag is empty; give the tag the applications to adopt carry.") }
                for try await a in graph.applications(filter: OData.hasTag(tag), select: listSelect, pageSize: 999) { add(a) }
            case .namePrefix(let prefix):
                guard !prefix.isEmpty else { throw Refused(description: "--name-prefix is empty; it would select every application in the tenant. Give a prefix.") }
                for try await a in graph.applications(filter: "startswith(displayName,\(OData.quote(prefix)))", select: listSelect, pageSize: 999) { add(a) }
            }
        }
        return out
    }

    /// One application by appId, object id, or display name.
    public static func find(_ name: String, in graph: GraphClient) async throws -> Application {
        if EntraIdentifier.isGUID(name) {
            do { return try await graph.application(appId: name, select: listSelect) } catch let e as EntraError where e.kind == .notFound || e.kind == .badRequest {}
            do { return try await graph.application(id: name, select: listSelect) } catch let e as EntraError where e.kind == .notFound || e.kind == .badRequest {}
        }
        var matches: [Application] = []
        for try await a in graph.applications(filter: "displayName eq \(OData.quote(name))", select: listSelect) {
            matches.append(a)
            if matches.count > 5 { break }
        }
        guard let first = matches.first else {
            throw Refused(description: "No application '\(name)' (tried appId, object id and display name). Check the name with the Entra portal or `keyroll audit`.")
        }
        guard matches.count == 1 else {
            throw Refused(description: "\(matches.count > 5 ? "More than 5" : "\(matches.count)") applications are named '\(name)' (appIds \(matches.prefix(5).map(\.appId).joined(separator: ", "))); name the one to adopt by its appId.")
        }
        return first
    }

    /// The targets of a manifest: each app's `name` (appId, object id or display name), its
    /// `replicas`, and its tags and owners (`keyroll:owner:…`) as extra tags. Two names for one
    /// application are refused.
    public static func targets(from manifest: Manifest, in graph: GraphClient) async throws -> [Target] {
        var out: [Target] = [], byId: [String: String] = [:]
        for a in manifest.apps {
            let app = try await find(a.name, in: graph)
            if let other = byId.updateValue(a.name, forKey: app.id) {
                throw Refused(description: "'\(other)' and '\(a.name)' in the manifest name the same application (\(app.appId)); list it once.")
            }
            out.append(Target(application: app, replicas: a.replicas, extraTags: a.tags + a.owners.map { "keyroll:owner:\($0)" }))
        }
        return out
    }

    // MARK: deciding

    /// What adopt does, or would do, with one application.
    public enum Decision: Sendable, Equatable {
        case refuse(String)
        case alreadyManaged(String)
        /// Adopted before, every replica asked for holds a key: nothing to do.
        case unchanged(kept: [ReplicaName?])
        case adopt(Work)
    }

    /// The writes adopting one application takes.
    public struct Work: Sendable, Equatable {
        public var application: Application
        public var needsMark: Bool
        public var toIssue: [ReplicaName?]
        /// Bootstraps an earlier run registered without writing their bundles: removed first.
        public var orphans: [String]
        public var kept: [ReplicaName?]
        /// Bootstraps an earlier run registered and wrote the bundle of, but did not log as done.
        public var finished: [Finished]
        public var lifetimes: AdoptionRules.LifetimeChoice?
        public var plan: AdoptionRules.Plan

        var writesToGraph: Bool { needsMark || !toIssue.isEmpty || !orphans.isEmpty }
    }

    public struct Finished: Sendable, Equatable {
        public var replica: ReplicaName?
        public var keyId: String
        public var bundlePath: String
    }

    /// Where the bundle of `app`'s `replica` goes: `{mapped display name}.{appId}.json` (a name is
    /// data, never a path; the appId keeps two apps of one name apart), `….r2.json` for a replica.
    public func bundlePath(_ app: Application, _ replica: ReplicaName?) -> String {
        let base = String(BundleName.fileName(for: app.displayName ?? "app").dropLast(5))
        return bundleDir + "/" + base + "." + BundleName.fileName(for: app.appId).dropLast(5) + (replica.map { "." + $0.rawValue } ?? "") + ".json"
    }

    /// The run log's key for a replica of an application (its object id: display names repeat).
    static func logKey(_ app: Application, _ replica: ReplicaName?) -> String { ProvisionRun.logKey("adopt:" + app.id, replica) }

    /// Reads `target` afresh and decides; `lifetimes` reuses an earlier choice for the same app.
    func decide(_ target: Target, tenantDefault: PolicyRead, lifetimes known: AdoptionRules.LifetimeChoice? = nil) async throws -> Decision {
        let graph = provisioner.graph
        if target.application.appId.lowercased() == graph.tokens.clientID.lowercased() {
            return .refuse("it is the provisioner's own application; KeyRoll does not adopt the identity it runs as")
        }
        if let n = target.replicas {
            do { try ReplicaCapacity(keyCredentialLimit: keyCredentialLimit).check(replicas: n, app: target.name) } catch let e as Manifest.ManifestError {
                return .refuse(e.description)
            }
        }
        let app = try await graph.application(id: target.application.id, select: Self.fullSelect)
        let now = graph.correctedNow
        let plan: AdoptionRules.Plan
        switch AdoptionRules.assess(app: app, replicas: target.replicaNames, now: now) {
        case .refused(let why): return .refuse(why)
        case .alreadyManaged(let why): return .alreadyManaged(why)
        case .adoptable(let p): plan = p
        }
        let keys = app.keyCredentials ?? []
        var toIssue: [ReplicaName?] = [], kept: [ReplicaName?] = [], orphans: [String] = [], finished: [Finished] = []
        for r in target.replicaNames {
            let prior = log.lastEntry(Self.logKey(app, r))
            let path = prior?.bundlePath ?? bundlePath(app, r)
            if prior?.event == .done { kept.append(r); continue }
            if let prior, prior.event == .intent, let k = keys.first(where: { $0.keyId == prior.keyId }) {
                if ProvisionRun.bundleHolds(path, k) {
                    // written but not logged: its host may already run on it; never revoke it
                    finished.append(Finished(replica: r, keyId: k.keyId, bundlePath: path))
                    kept.append(r)
                    continue
                }
                orphans.append(k.keyId)  // registered, bundle never written: its private key died with the run
            }
            let others = keys.filter { k in
                let n = CredentialName.parse(displayName: k.displayName)
                return n.isKeyRoll && n.replica == r && !orphans.contains(k.keyId)
            }
            if !others.isEmpty { kept.append(r); continue }  // issued before (or the log was lost), or its agent has rolled: its host owns it
            toIssue.append(r)
        }
        var work = Work(application: app, needsMark: plan.needsMark || !(Set(target.extraTags).isSubset(of: Set(app.tags ?? []))), toIssue: toIssue,
                        orphans: orphans, kept: kept, finished: finished, lifetimes: known, plan: plan)
        if !work.writesToGraph && finished.isEmpty { return .unchanged(kept: kept) }
        if !toIssue.isEmpty {
            if keys.count - orphans.count + toIssue.count > keyCredentialLimit {
                return .refuse("it holds \(keys.count - orphans.count) keyCredentials; \(toIssue.count) bootstrap certificates more would pass the limit of \(keyCredentialLimit). Remove credentials it no longer needs first")
            }
            if work.lifetimes == nil {
                do { work.lifetimes = try await chooseLifetimes(app, tenantDefault: tenantDefault) } catch let r as Refused { return .refuse(r.description) }
            }
        }
        return .adopt(work)
    }

    /// The tenant default policy, read once per run (or why it could not be).
    public enum PolicyRead: Sendable {
        case read(GraphAppManagementPolicy)
        case failed(String)
    }

    func readTenantDefault() async -> PolicyRead {
        do { return .read(try await provisioner.graph.defaultAppManagementPolicy()) } catch let e as EntraError {
            return .failed(AppCredentialLimits.NotReadable(underlying: e).description)
        } catch { return .failed("\(error)") }
    }

    func chooseLifetimes(_ app: Application, tenantDefault: PolicyRead) async throws -> AdoptionRules.LifetimeChoice {
        var limits: AppCredentialLimits?
        var unreadable: String?
        switch tenantDefault {
        case .failed(let why): unreadable = why
        case .read(let d):
            do { limits = try await provisioner.graph.credentialLimits(for: app, tenantDefault: d) } catch let e as AppCredentialLimits.NotReadable {
                unreadable = e.description
            } catch let e as AppCredentialLimits.Unreadable {
                // a policy KeyRoll cannot read proves nothing: only the operator's limit can stand in
                guard operatorMaximumCertificateValidity != nil else { throw Refused(description: e.description) }
                unreadable = e.description
            }
        }
        return try AdoptionRules.chooseLifetimes(limits: limits, unreadable: unreadable, operatorCap: operatorMaximumCertificateValidity,
                                                 requestedBootstrap: bootstrapValidity)
    }

    // MARK: running

    /// What adopting one application came to.
    public enum Outcome: Sendable, Equatable {
        /// Marked and given bundles now (paths), beside the replicas that already had a key.
        case adopted(appId: String, bundles: [String], kept: [ReplicaName?], lifetimes: String?, warning: String?)
        /// Already adopted; every replica asked for has its key.
        case unchanged(appId: String, kept: [ReplicaName?])
        case alreadyManaged(appId: String, why: String)
        case refused(appId: String, why: String)
    }

    public struct Report: Sendable {
        public struct Entry: Sendable {
            public var target: Target
            /// nil when adopting it failed (`failure` says why; the next run resumes it).
            public var outcome: Outcome?
            public var failure: String?
        }
        public var entries: [Entry] = []
        public var seconds: Double = 0
        public var throttleEvents = 0
        public var refused: Int { entries.filter { if case .refused? = $0.outcome { return true }; return false }.count }
        public var failed: Int { entries.filter { $0.failure != nil }.count }
    }

    /// Adopts every target, paced by Graph's budget.
    public func execute(_ targets: [Target], progress: ProgressReporter? = nil) async -> Report {
        let started = Date()
        let tenantDefault = await readTenantDefault()
        let results = await BulkRunner.run(targets, limit: limit, progress: progress) { t in try await adoptOne(t, tenantDefault: tenantDefault) }
        var report = Report()
        report.entries = zip(targets, results).map { t, r in
            switch r {
            case .success(let o): return Report.Entry(target: t, outcome: o, failure: nil)
            case .failure(let e): return Report.Entry(target: t, outcome: nil, failure: Redaction.scrub("\(e)"))
            }
        }
        report.seconds = Date().timeIntervalSince(started)
        report.throttleEvents = await limit.throttleEvents
        return report
    }

    /// One line of a plan: the decision, or why it could not be made.
    public struct PlanEntry: Sendable {
        public var target: Target
        public var decision: Decision?
        public var failure: String?
    }

    /// What `execute` would do with each target; reads only.
    public func plan(_ targets: [Target]) async -> [PlanEntry] {
        let tenantDefault = await readTenantDefault()
        var out: [PlanEntry] = []
        for t in targets {
            do { out.append(PlanEntry(target: t, decision: try await decide(t, tenantDefault: tenantDefault))) } catch {
                out.append(PlanEntry(target: t, decision: nil, failure: Redaction.scrub("\(error)")))
            }
        }
        return out
    }

    func adoptOne(_ target: Target, tenantDefault: PolicyRead) async throws -> Outcome {
        let first = try await decide(target, tenantDefault: tenantDefault)
        let appId = target.application.appId
        switch first {
        case .refuse(let why): return .refused(appId: appId, why: why)
        case .alreadyManaged(let why): return .alreadyManaged(appId: appId, why: why)
        case .unchanged(let kept): return .unchanged(appId: appId, kept: kept)
        case .adopt(let work) where !work.writesToGraph:
            try logFinished(work)
            return .unchanged(appId: appId, kept: work.kept)
        case .adopt(let work):
            // decided again holding the lease, from a fresh read: another run may have acted meanwhile
            return try await provisioner.withLease(objectId: target.application.id, name: target.name) {
                switch try await decide(target, tenantDefault: tenantDefault, lifetimes: work.lifetimes) {
                case .refuse(let why): return .refused(appId: appId, why: why)
                case .alreadyManaged(let why): return .alreadyManaged(appId: appId, why: why)
                case .unchanged(let kept): return .unchanged(appId: appId, kept: kept)
                case .adopt(let w): return try await write(target, w)
                }
            }
        }
    }

    func logFinished(_ work: Work) throws {
        let now = provisioner.graph.correctedNow
        for f in work.finished {
            try log.append(.init(app: Self.logKey(work.application, f.replica), event: .done, keyId: f.keyId, objectId: work.application.id,
                                 appId: work.application.appId, bundlePath: f.bundlePath, time: now))
        }
    }

    /// The privileged part: intent, mark, service principal, bootstraps, bundles, outcome.
    func write(_ target: Target, _ work: Work) async throws -> Outcome {
        let graph = provisioner.graph
        let app = work.application
        let now = graph.correctedNow
        guard work.writesToGraph else {
            try logFinished(work)
            return .unchanged(appId: app.appId, kept: work.kept)
        }
        // the keys first (generating them is slow), so the intent names every keyId
        let lifetimes = work.lifetimes
        let size = keySize
        var issued: [(replica: ReplicaName?, credential: SigningCredential, keyId: String, path: String)] = []
        if !work.toIssue.isEmpty {
            guard let validity = lifetimes?.bootstrapValidity else { throw Refused(description: "internal: no lifetimes chosen for \(target.name)") }
            for r in work.toIssue {
                let cred = try await Background.run { try Provisioner.bootstrapCredential(replica: r, now: now, validity: validity, size: size) }
                issued.append((r, cred, UUID().uuidString.lowercased(), bundlePath(app, r)))
            }
        }
        let tags = [Provisioner.managedTag, Provisioner.adoptedTag] + target.extraTags
        var record: [String: JSONValue] = [
            "action": "adopt", "operator": .string(operatorName), "provisionerClientId": .string(graph.tokens.clientID),
            "app": .string(app.displayName ?? ""), "appId": .string(app.appId), "objectId": .string(app.id), "reason": .string(reason),
            "replicas": .array(issued.map { .string(AdoptionRules.label($0.replica)) }),
            "keyIds": .array(issued.map { .string($0.keyId) }),
            "thumbprints": .array(issued.map { .string($0.credential.certificate.sha1Thumbprint.hex) }),
            "bundles": .array(issued.map { .string($0.path) }),
            "orphanedBootstrapsRemoved": .array(work.orphans.map(JSONValue.string)),
            "tags": .array(tags.map(JSONValue.string)),
            "secretsKept": .int(Int64(work.plan.secrets)), "foreignCertificatesKept": .int(Int64(work.plan.foreignCertificates)),
        ]
        if let l = lifetimes {
            record["bootstrapValiditySeconds"] = .int(Int64(l.bootstrapValidity.rounded(.down)))
            record["maximumCertificateValiditySeconds"] = l.maximumCertificateValidity.map { .int(Int64($0.rounded(.down))) } ?? .null
            record["lifetimesFrom"] = .string(l.source)
        }
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: record)
        // a bundle folder others can read is refused before anything is recorded or written
        if !issued.isEmpty { try SecureFiles.ensurePrivateDirectory(bundleDir) }
        try trail.intent()
        do {
            try logFinished(work)
            if work.needsMark { try await mark(app, tags: tags) }
            if try await graph.servicePrincipal(appId: app.appId) == nil { _ = try await graph.createServicePrincipal(appId: app.appId) }
            if !work.orphans.isEmpty {
                let drop = Set(work.orphans)
                try await provisioner.removeKeyCredentials(objectID: app.id) { drop.contains($0.keyId) }
            }
            // an intent per bootstrap before its registration: a run that dies before the bundle is
            // written leaves a key the next run finds by its keyId and removes
            for i in issued {
                try log.append(.init(app: Self.logKey(app, i.replica), event: .intent, keyId: i.keyId, objectId: app.id, appId: app.appId,
                                     bundlePath: i.path, time: now))
            }
            if !issued.isEmpty {
                try await provisioner.mergeKeyCredentials(objectID: app.id, adding: issued.map {
                    Provisioner.NewKey(certificate: $0.credential.certificate, keyId: $0.keyId, displayName: Provisioner.bootstrapDisplayName(replica: $0.replica))
                })
            }
            let e = graph.endpoints
            for i in issued {
                var bundle = try BootstrapBundle(tenantId: e.tenant, authorityHost: e.authorityHost, graphBaseURL: e.graphBaseURL, applicationObjectId: app.id,
                                             appId: app.appId, displayName: app.displayName, replica: i.replica, credential: i.credential, keyId: i.keyId,
                                             createdAt: now, createdBy: nil)
                bundle.maximumCertificateValidity = lifetimes?.maximumCertificateValidity
                try SecureFiles.writeAtomically(try bundle.encoded(), to: i.path, hook: hook)
                try log.append(.init(app: Self.logKey(app, i.replica), event: .done, keyId: i.keyId, objectId: app.id, appId: app.appId,
                                     bundlePath: i.path, time: now))
            }
        } catch {
            trail.failed(error)
            throw error
        }
        try trail.completed()
        return .adopted(appId: app.appId, bundles: issued.map(\.path), kept: work.kept, lifetimes: lifetimes?.source, warning: lifetimes?.warning)
    }

    /// Adds `tags` the application lacks: read → PATCH the whole list with them appended → verify.
    /// No tag is ever dropped (the lease tag included); the read is made under the lease.
    func mark(_ app: Application, tags: [String]) async throws {
        let graph = provisioner.graph
        try await AppLease.current?.check()
        let current = try await graph.application(id: app.id, select: ["id", "appId", "tags"]).tags ?? []
        var missing: [String] = []
        for t in tags where !current.contains(t) && !missing.contains(t) { missing.append(t) }
        guard !missing.isEmpty else { return }
        try await graph.updateApplication(id: app.id, ["tags": .array((current + missing).map(JSONValue.string))])
        let after = try await graph.application(id: app.id, select: ["id", "appId", "tags"]).tags ?? []
        let gone = current.filter { !after.contains($0) && AppLease.parse($0) == nil }
        if !gone.isEmpty { logger.warning("tags removed since the PATCH was built (another writer?)", metadata: ["app": "\(app.appId)", "tags": "\(gone)"]) }
        let notThere = missing.filter { !after.contains($0) }
        guard notThere.isEmpty else {
            throw EntraError(kind: .protocolViolation, operation: "markAdopted",
                             message: "after the PATCH, Graph does not show the tags \(notThere.joined(separator: ", ")) on \(app.appId)")
        }
    }
}
