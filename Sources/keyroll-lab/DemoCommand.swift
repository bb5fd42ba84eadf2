import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness
import Logging
import Provisioning

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Provision apps on an embedded Entra emulator and watch their agents roll certificates for years of virtual time.",
        discussion: """
            Runs entirely in this process: an emulator with a virtual clock, propagation delay, Graph throttling and \
            injected faults; a provisioner that creates app registrations with 2-day bootstrap certificates; and one \
            agent per app that bootstraps and then rolls at 2/3 of each certificate's lifetime. Prints a timeline and, \
            per app, what was added and removed, whether it was ever locked out, and how close it came to the cliff.
            """)

    @Option(name: .long, help: "Number of apps.")
    var apps = 5

    @Option(name: .long, help: "Simulated years.")
    var years = 3.0

    @Option(name: .long, help: "Seed for jitter, delays and faults (same seed, same run).")
    var seed: UInt64 = 7

    @Option(name: .long, help: "Replicas of the multi-host app web-frontend (each host its own key); 0 leaves it out. It scales out by one after a third of the run and retires one replica after two thirds.")
    var replicas = 3

    @Flag(name: .long, help: "Print every step of every roll, not just one line per roll.")
    var verbose = false

    @Flag(name: .long, help: "Switch off propagation delay, throttling and faults.")
    var calm = false

    @Option(name: .long, help: "Also write the final fleet audit as a self-contained HTML report to this file.")
    var html: String?

    @Option(name: .long, help: "fleet (default): provision apps and roll them for years. brownfield: adopt two legacy apps that sign in with client secrets, and retire each secret only on evidence.")
    var scenario = "fleet"

    @Option(name: .long, help: "With --scenario brownfield: simulated days after adoption.")
    var days = 75

    @Option(name: .long, help: ArgumentHelp(
        "Where the first app (orders-api, which holds no key and reads Graph through the token endpoint) keeps its keys: file, softhsm2 (a SoftHSM2 token the demo makes), or a pkcs11: URI.",
        valueName: "file|softhsm2|pkcs11:URI"))
    var keyStore = "file"

    func run() async throws {
        switch scenario {
        case "fleet": break
        case "brownfield":
            guard (20...400).contains(days) else { throw ValidationError("--days must be between 20 and 400 (the secret's evidence window is 14 days)") }
            LoggingSystem.bootstrap { label in var h = StreamLogHandler.standardError(label: label); h.logLevel = .critical; return h }
            if try await !BrownfieldDemo(days: days).run() { throw ExitCode(1) }
            return
        default: throw ValidationError("--scenario \(scenario) is not known: fleet or brownfield")
        }
        guard (1...50).contains(apps) else { throw ValidationError("--apps must be between 1 and 50") }
        guard years > 0, years <= 10 else { throw ValidationError("--years must be between 0 and 10") }
        guard (0...20).contains(replicas) else { throw ValidationError("--replicas must be between 0 and 20") }
        LoggingSystem.bootstrap { label in var h = StreamLogHandler.standardError(label: label); h.logLevel = .critical; return h }
        let wallStart = Date()
        let start = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600)
        let clock = ManualClock(start)
        var settings = EmulatorSettings()
        settings.seed = seed
        if !calm {
            settings.propagationDelayMin = 5
            settings.propagationDelayMax = 300
            settings.throttling.enabled = true
        }
        let emulator = try EntraEmulator(clock: clock, settings: settings)
        if !calm {
            emulator.setFaults([
                FaultRule(route: "token", action: .status(503, retryAfter: nil), probability: 0.05),
                FaultRule(route: "POST /addKey", action: .status(429, retryAfter: 2.5), probability: 0.10),
                FaultRule(route: "POST /removeKey", action: .dropResponse, probability: 0.05),
            ])
        }
        let (provReg, provCred) = try emulator.seedDevelopmentTenant(validity: (years + 1) * 365 * 86_400)
        let clients = LabClients(emulator: emulator, tenantID: provReg.tenantID)
        let (transport, sleeper) = (clients.transport, clients.sleeper)
        let provisioner = clients.provisioner(as: provReg.appId, provCred)
        let lockoutCheck = LockoutCheck(emulator: emulator)
        print("KeyRoll demo — an embedded Entra emulator on a virtual clock, \(apps) apps, \(formatYears(years)) simulated")
        if calm {
            print("  calm run: no propagation delay, throttling or faults")
        } else {
            print("  propagation delay 5 s–5 min after addKey · Graph throttling on · faults: 5% token 503s, 10% addKey 429s, 5% lost removeKey answers")
        }
        print("")
        let root = NSTemporaryDirectory() + "/keyroll-demo-\(UUID().uuidString.prefix(8))"
        try SecureFiles.ensurePrivateDirectory(root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let names = ["orders-api", "billing-worker", "search-indexer", "payments-gateway", "reports-cron", "inventory-sync", "auth-proxy",
                     "email-sender", "ledger-api", "catalog-web"]
        var journal = DemoJournal()
        var rollers: [(name: String, roller: Roller)] = []
        var rng = SplitMix64(seed: seed)
        let firstKeyStore = try DemoKeyStore.make(keyStore, root: root)
        print("Provisioning \(apps) app registrations with 2-day bootstrap certificates (read-merge-PATCH-verify)…")
        for i in 0..<apps {
            let name = i < names.count ? names[i] : "service-\(i + 1)"
            let result = try await provisioner.provision(name: name)
            let store = CredentialStore(path: root + "/" + name)
            try Roller.importBundle(result.bundle, into: store, now: clock.now(), keyStore: i == 0 ? firstKeyStore.setting() : nil)
            if i == 0, firstKeyStore.uri != nil {
                print("  \(name): its agent generates every key inside \(firstKeyStore.description), non-extractable; the token signs every assertion and proof")
            }
            let r = rng.unit()
            let events = journal.sink(name: name)
            let roller = try Roller(store: store, transport: transport, clock: clock, sleeper: sleeper, logger: Logger(label: "demo"),
                                    observer: events, random: { r })
            rollers.append((name, roller))
            journal.appIds[result.application.appId] = name
        }
        // The first app holds no key in its process: it reads Graph with tokens from the agent's
        // managed-identity endpoint (the first roller's store enables it).
        let keylessStore = rollers[0].roller.store
        try keylessStore.enableTokenEndpoint(TokenEndpointSettings(allowedResources: ["https://graph.microsoft.com"]))
        // the application's own business permission (an app may not read even itself without one)
        try emulator.grant([.applicationReadAll], toAppId: rollers[0].roller.identity.appId)
        let keyless = KeylessReader(endpoint: TokenEndpoint(rollers: [rollers[0].roller], metrics: MetricsRegistry(), clock: clock, logger: Logger(label: "demo")),
                                    secret: try keylessStore.tokenEndpointSecret(), emulator: emulator,
                                    objectID: rollers[0].roller.identity.applicationObjectId, base: clients.endpoints.authorityHost)
        var keylessReads = KeylessReader.Tally()
        var web: ReplicatedApp?
        if replicas > 0 {
            let w = ReplicatedApp(name: "web-frontend", root: root, provisioner: provisioner, clock: clock)
            for replica in try await w.scale(to: replicas) {
                rollers.append((w.label(replica), try w.roller(replica, transport: transport, sleeper: sleeper, events: journal.sink(name: w.label(replica)), random: rng.unit())))
            }
            journal.appIds[w.appId ?? ""] = w.name
            print("  \(w.name): one app registration, \(replicas) replicas, one bundle per host (\(w.bundles.joined(separator: ", ")))")
            web = w
        }
        print("  done: \(apps + (replicas > 0 ? 1 : 0)) applications and service principals; each agent holds only its bootstrap bundle\n")
        // Let the bootstrap certificates propagate the way Entra does before the agents start.
        clock.advance(by: settings.propagationDelayMax + 1)
        print("Timeline (UTC)")
        let end = start.addingTimeInterval(years * 365.25 * 86_400)
        var lockouts: [String: Int] = [:]
        var margins: [String: [TimeInterval]] = [:]
        var scaleOutAt: Date? = web == nil ? nil : start.addingTimeInterval(years * 365.25 * 86_400 / 3)
        var scaleInAt: Date? = web == nil ? nil : start.addingTimeInterval(years * 365.25 * 86_400 * 2 / 3)
        while true {
            guard let (idx, due) = rollers.enumerated().map({ ($0.offset, $0.element.roller.nextRollDate()) }).min(by: { $0.1 < $1.1 }), due < end else { break }
            if let w = web, let at = scaleOutAt, at <= due {
                scaleOutAt = nil
                clock.set(max(at, clock.now()))
                let before = try emulator.keyCredentials(appId: w.appId ?? "").map(\.keyId)
                for replica in try await w.scale(to: replicas + 1) {
                    rollers.append((w.label(replica), try w.roller(replica, transport: transport, sleeper: sleeper, events: journal.sink(name: w.label(replica)), random: rng.unit())))
                }
                clock.advance(by: settings.propagationDelayMax + 1)  // the new bootstrap propagates before its host's agent starts
                let after = try emulator.keyCredentials(appId: w.appId ?? "").map(\.keyId)
                let untouched = before.allSatisfy(after.contains)
                print("  \(shortDate(clock.now()))  \(w.name.padding(toLength: 17, withPad: " ", startingAt: 0)) scale out → replica r\(replicas + 1): one more bootstrap bundle; the \(before.count) keys of r1–r\(replicas) \(untouched ? "untouched" : "CHANGED")")
                if !untouched { lockouts[w.name, default: 0] += 1 }
                continue
            }
            if let w = web, let at = scaleInAt, at <= due {
                scaleInAt = nil
                clock.set(max(at, clock.now()))
                let gone = ReplicaName.numbered(2)
                rollers.removeAll { $0.name == w.label(gone) }  // its host is decommissioned: the agent stops with it
                let removed = try await ReplicaRetirement(provisioner: provisioner, auditLogPath: root + "/audit.log")
                    .run(application: w.application!, replica: gone, force: true, reason: "host decommissioned (demo)", operator: "demo")
                print("  \(shortDate(clock.now()))  \(w.name.padding(toLength: 17, withPad: " ", startingAt: 0)) scale in  → replica \(gone) retired (keyroll retire): \(removed.count) key removed, siblings' keys untouched, audited")
                continue
            }
            if due > clock.now() { clock.set(due) }
            let (name, roller) = rollers[idx]
            let before = roller.identityStatus()
            margins[name, default: []].append(before.timeToCliff ?? 0)
            if await !lockoutCheck.violations(roller.store, appId: roller.identity.appId).isEmpty { lockouts[name, default: 0] += 1 }
            let rollStart = clock.now()
            let outcome: RollOutcome
            var keylessLine: KeylessReader.Tally?
            do {
                let reason = before.activeOrigin == .bootstrap ? "bootstrap" : "due"
                if idx == 0 {
                    let (o, t) = try await keyless.roll(roller, reason: reason)
                    outcome = o
                    keylessReads.reads += t.reads
                    keylessReads.duringRoll += t.duringRoll
                    keylessReads.failures += t.failures
                    keylessLine = t
                } else {
                    outcome = try await roller.roll(reason: reason)
                }
            } catch {
                print("  \(shortDate(clock.now()))  \(name.padding(toLength: 18, withPad: " ", startingAt: 0)) roll failed: \(error); the agent retries later")
                clock.advance(by: 3600)
                continue
            }
            if await !lockoutCheck.violations(roller.store, appId: roller.identity.appId).isEmpty { lockouts[name, default: 0] += 1 }
            print(journal.line(name: name, at: rollStart, outcome: outcome, roller: roller, from: before, verbose: verbose))
            if let t = keylessLine {
                print("  \(String(repeating: " ", count: 16))  \(String(repeating: " ", count: 18)) ↳ its app, holding no key, read Graph \(t.reads)× through the token endpoint, "
                      + "\(t.duringRoll)× while the key rolled: \(t.failures.isEmpty ? "all 200" : "\(t.failures.count) failed: \(t.failures.prefix(3))")")
            }
        }
        clock.set(end)
        print("\nSummary after \(formatYears(years)) (virtual clock now \(shortDate(clock.now())) UTC)")
        var rows: [[String]] = []
        var allGood = true
        for (name, roller) in rollers {
            let s = roller.identityStatus()
            let registered = try emulator.keyCredentials(appId: roller.identity.appId)
            let locked = lockouts[name, default: 0]
            if await !lockoutCheck.violations(roller.store, appId: roller.identity.appId).isEmpty || locked > 0 { allGood = false }
            let afterBootstrap = margins[name, default: []].dropFirst().min()
            rows.append([name, "\(journal.added[name, default: 0])", "\(journal.removed[name, default: 0])", locked == 0 ? "never" : "\(locked) times",
                         formatDuration(margins[name]?.first), formatDuration(afterBootstrap), "\(registered.count)", shortDate(s.activeNotAfter), s.alarm.rawValue])
        }
        print(table(["APP", "KEYS ADDED", "KEYS REMOVED", "LOCKED OUT", "BOOTSTRAP MARGIN", "SMALLEST MARGIN AFTER", "KEYS IN ENTRA", "ACTIVE UNTIL", "ALARM"], rows))
        let stats = journal.stats
        print("\n\(stats.rolls) rolls, \(stats.abandoned) abandoned; the agents waited out AADSTS700027 \(stats.notYetActive) times and retried \(stats.retries) transient failures.")
        print("Every old key was removed only after its successor was stored, listed by Graph and accepted \(RollPolicy().verifySuccesses)× by the token endpoint.")
        print(allGood ? "✔ No app was ever without a registered, valid, proven key." : "✘ Some app was locked out (see above).")
        print(keylessReads.failures.isEmpty
              ? "✔ \(rollers[0].name) never held a key: it read Graph \(keylessReads.reads)× with tokens from the agent's endpoint (\(keylessReads.duringRoll)× mid-roll), every read answered."
              : "✘ \(rollers[0].name)'s reads through the token endpoint failed \(keylessReads.failures.count)×: \(keylessReads.failures.prefix(5))")
        if !keylessReads.failures.isEmpty { allGood = false }
        if firstKeyStore.uri != nil {
            // the retained old key's window passes and two registration checks release it, as the agent does between rolls
            let first = rollers[0].roller
            clock.advance(by: first.policy.retainedKeyWindow + 1)
            for _ in 0..<2 {
                try await first.watchRegistration()
                clock.advance(by: 600)
            }
            let (pairs, keyFiles) = try DemoKeyStore.check(first)
            let inToken = first.store.keyStoreKind(of: first.journal.active) == .pkcs11
            let ok = inToken && pairs == 1 && keyFiles.isEmpty
            print(ok
                  ? "✔ \(rollers[0].name)'s \(journal.added[rollers[0].name, default: 0]) rolled keys were generated and used inside the token; it holds one key pair now (the active key), and no private key exists anywhere in the agent's store."
                  : "✘ \(rollers[0].name): active key in the token \(inToken), key pairs in the token \(pairs), private key material in \(keyFiles)")
            if !ok { allGood = false }
        }
        let audit = try await Auditor(graph: provisioner.graph).scan(now: clock.now(), expiringWithinDays: 30)
        if let w = web, let app = audit.apps.first(where: { $0.appId == w.appId }) {
            let live = rollers.filter { $0.name.hasPrefix(w.name + " ") }
            let next = live.map { $0.roller.nextRollDate() }
            let spread = (next.max() ?? clock.now()).timeIntervalSince(next.min() ?? clock.now())
            print("\n\(w.name): \(app.replicas.count) replicas in Entra, each with its own key, rolled on its own; their next rolls are spread over \(formatDuration(spread)) (jitter and different start dates)")
            for r in app.replicas {
                print("  replica \(r.replica.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0)) \(r.condition.rawValue.padding(toLength: 21, withPad: " ", startingAt: 0)) \(r.keyIds.count) key  last rolled \(r.lastRolledAt.map { shortDate($0) } ?? "never")")
            }
            if !app.replicas.allSatisfy({ $0.condition == .healthy }) || app.replicas.count != replicas { allGood = false }
        }
        print("\nFleet audit by the provisioner (keyroll audit): " + AuditReport.summary(audit))
        if let html {
            try AuditReport.html(audit).write(toFile: html, atomically: true, encoding: .utf8)
            print("HTML report: \(html)")
        }
        print(String(format: "Finished in %.1f s of real time.", Date().timeIntervalSince(wallStart)))
        if !allGood { throw ExitCode(1) }
    }

    func formatYears(_ y: Double) -> String { y == 1 ? "1 year" : (y == y.rounded() ? "\(Int(y)) years" : "\(y) years") }
}

/// Collects agent events into one line per roll.
final class DemoJournal: @unchecked Sendable {
    private let lock = NSLock()
    var appIds: [String: String] = [:]
    private var pending: [String: [AgentEvent]] = [:]
    var added: [String: Int] = [:]
    var removed: [String: Int] = [:]
    var stats = (rolls: 0, abandoned: 0, notYetActive: 0, retries: 0)

    func sink(name: String) -> @Sendable (AgentEvent) -> Void {
        { e in self.lock.withLock { self.pending[name, default: []].append(e) } }
    }

    func line(name: String, at: Date, outcome: RollOutcome, roller: Roller, from before: IdentityStatus, verbose: Bool) -> String {
        let events = lock.withLock { () -> [AgentEvent] in let e = pending[name] ?? []; pending[name] = []; return e }
        let waits = events.filter { $0.kind == .notYetActive }.count
        let retries = events.filter { $0.kind == .retry }.count
        let propagation: TimeInterval? = {
            guard let added = events.first(where: { $0.kind == .added })?.time, let verified = events.first(where: { $0.kind == .verified })?.time else { return nil }
            return verified.timeIntervalSince(added)
        }()
        lock.withLock {
            stats.notYetActive += waits
            stats.retries += retries
        }
        let who = name.padding(toLength: 17, withPad: " ", startingAt: 0)
        var text: String
        switch outcome {
        case .rolled(let t):
            let j = roller.journal
            let cert = j.credential(t)
            lock.withLock {
                stats.rolls += 1
                added[name, default: 0] += 1
                removed[name, default: 0] += 1
            }
            let kind = before.activeOrigin == .bootstrap ? "bootstrap retired" : "rolled        "
            text = "  \(shortDate(at))  \(who) \(kind) → \(t.prefix(12))  valid to \(cert.map { shortDate($0.notAfter).prefix(10) } ?? "?")"
            var notes: [String] = []
            if let p = propagation { notes.append("accepted after \(formatDuration(p))") }
            if retries > 0 { notes.append("\(retries) retr\(retries == 1 ? "y" : "ies")") }
            if !notes.isEmpty { text += "   (" + notes.joined(separator: ", ") + ")" }
        case .abandoned(let why):
            lock.withLock {
                stats.abandoned += 1
                added[name, default: 0] += 1
                removed[name, default: 0] += 1
            }
            text = "  \(shortDate(at))  \(who) roll abandoned (\(why)); old key kept, new key removed"
        case .notDue(let next):
            text = "  \(shortDate(at))  \(who) not due until \(shortDate(next))"
        }
        if verbose {
            text += "\n" + events.map { "      \(shortDate($0.time))  \($0.kind.rawValue): \($0.detail)" }.joined(separator: "\n")
        }
        return text
    }
}
