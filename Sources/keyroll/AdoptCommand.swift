import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import Provisioning

struct AdoptCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adopt",
        abstract: "Bring existing app registrations under KeyRoll: mark each, give it a bootstrap certificate per host and a bundle (privileged, audited).",
        discussion: """
            Selects apps by --app (appId, object id or display name; repeatable), --manifest (YAML or CSV as for \
            provision: each name is an appId, object id or display name, with its replicas, tags and owners), --tag and \
            --name-prefix. The whole selection is resolved before anything is written.

            Rules. An app is adopted only when KeyRoll understands every credential it holds: client secrets and \
            certificates (AsymmetricX509Cert, usage Verify) are understood and kept exactly as they are; an app holding a \
            symmetric key, a signing key (usage Sign), a key without a type or dates, or KeyRoll-named keys without the \
            keyroll:managed tag is refused, with the reason, and nothing is done to it. An app KeyRoll provisioned is \
            skipped. Certificate lifetimes come from the app's app management policy (its assigned policy, else the \
            tenant default; restrictForAppsCreatedAfterDateTime is honoured): the bootstrap fits inside it and the limit \
            goes into the bundle, so the agent never makes a certificate Entra refuses. Reading the policies needs \
            Policy.Read.All; without it adopt refuses unless --max-certificate-days says the limit.

            Per app, holding its lease: the intent goes to --audit-log, then the tags keyroll:managed and \
            keyroll:adopted are added (no tag is removed), its service principal is created if missing, one bootstrap \
            per replica is registered by read-merge-PATCH-verify, and its bundle written to --out-dir (0600, \
            NAME.APPID.json or NAME.APPID.rN.json), then the outcome. Re-running is safe: adopted apps whose hosts all \
            have keys are left alone, and a run killed at any point is finished by the next (--log). A bundle file deleted \
            after import is not re-issued: use keyroll rebootstrap.

            Exit status: 0 when every app was adopted, unchanged or skipped; 1 when any failed (run again: it \
            resumes); 2 when any was refused (and none failed).
            """)

    @Option(name: .long, help: "An application to adopt: appId, object id, or display name (repeatable).")
    var app: [String] = []

    @Option(name: .long, help: "Manifest of apps to adopt (.yaml, .yml or .csv, as for provision: name, replicas, tags, owners).")
    var manifest: String?

    @Option(name: .long, help: "Adopt every application carrying this tag (repeatable).")
    var tag: [String] = []

    @Option(name: .long, help: "Adopt every application whose display name starts with this (repeatable).")
    var namePrefix: [String] = []

    @Option(name: .long, help: "Folder for the bundles (created 0700).")
    var outDir: String

    @Option(name: .long, help: "Hosts per app selected by --app, --tag or --name-prefix: one bundle each (r1 … rN). Default: one host.")
    var replicas: Int?

    @Option(name: .long, help: "The longest certificate lifetime to allow, in days: used when the app management policies cannot be read, and never above a policy's limit.")
    var maxCertificateDays: Double?

    @Flag(name: .long, help: "Show what would be done for each app; change nothing.")
    var plan = false

    @Option(name: .long, help: "Why (recorded in the audit log).")
    var reason: String

    @Option(name: .long, help: "Audit log (JSON lines, appended).")
    var auditLog = "keyroll-audit.log"

    @Option(name: .long, help: "Progress log for resuming (default: OUT_DIR/adopt.log).")
    var log: String?

    @Option(name: .long, help: "Starting concurrency (it adapts to throttling).")
    var concurrency = 4

    @OptionGroup var identity: ProvisionerOptions

    func validate() throws {
        if app.isEmpty && manifest == nil && tag.isEmpty && namePrefix.isEmpty {
            throw ValidationError("Name the apps to adopt: --app, --manifest, --tag or --name-prefix.")
        }
        if let n = replicas, n < 1 { throw ValidationError("--replicas \(n): give 1 or more (leave it out for one host).") }
        if let d = maxCertificateDays, !(d.isFinite && d >= 1 && d <= 36_500) {
            throw ValidationError("--max-certificate-days \(d): give the number of days (1 to 36500) Entra allows certificates of these apps to live.")
        }
        if concurrency < 1 || concurrency > 32 { throw ValidationError("--concurrency must be 1 to 32.") }
        if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason is empty; say why (it is recorded in the audit log).") }
    }

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let m = try manifest.map { try Manifest.load(path: $0) }
        // the bundle folder holds private keys: an existing one others can read is refused before
        // anything is written; a new one is made only once there is something to adopt (not for --plan)
        if FileManager.default.fileExists(atPath: outDir) {
            do { try SecureFiles.ensurePrivateDirectory(outDir) } catch { throw UserFacingError("--out-dir \(outDir): \(error)") }
        }
        let (provisioner, transport) = try identity.connect()
        let who = Environment.current["USER"] ?? Environment.current["LOGNAME"] ?? "unknown"
        let code: Int32 = try await transport.closing {
            let graph = provisioner.graph
            let targets: [Adoption.Target]
            do {
                var t: [Adoption.Target] = []
                if let m { t += try await Adoption.targets(from: m, in: graph) }
                let selectors = app.map(Adoption.Selector.app) + tag.map(Adoption.Selector.tag) + namePrefix.map(Adoption.Selector.namePrefix)
                let seen = Set(t.map(\.application.id))
                for a in try await Adoption.resolve(selectors, in: graph) where !seen.contains(a.id) {
                    t.append(Adoption.Target(application: a, replicas: replicas))
                }
                targets = t
            } catch let r as Adoption.Refused {
                throw UserFacingError(r.description)
            }
            guard !targets.isEmpty else {
                print("No application matches the selection; nothing to do.")
                return 0
            }
            var logPath = log ?? outDir + "/adopt.log"
            if plan {
                // a plan writes nothing: without a run log yet, it reads an empty one from a scratch folder
                if !FileManager.default.fileExists(atPath: logPath) { logPath = NSTemporaryDirectory() + "/keyroll-adopt-plan-\(UUID().uuidString).log" }
            } else {
                do { try SecureFiles.ensurePrivateDirectory(outDir) } catch { throw UserFacingError("--out-dir \(outDir): \(error)") }
            }
            defer { if plan && logPath.hasPrefix(NSTemporaryDirectory()) { try? FileManager.default.removeItem(atPath: logPath) } }
            var adoption = Adoption(provisioner: provisioner, auditLogPath: auditLog, log: try ProvisionLog(path: logPath),
                                    bundleDir: outDir, reason: reason, operator: who, limit: AdaptiveLimit(start: concurrency, maximum: max(concurrency, 32)))
            adoption.operatorMaximumCertificateValidity = maxCertificateDays.map { $0 * 86_400 }
            if let m { adoption.bootstrapValidity = m.bootstrapValidity; adoption.keyCredentialLimit = m.keyCredentialLimit }
            return plan ? await printPlan(adoption, targets) : await execute(adoption, targets)
        }
        if code != 0 { throw ExitCode(code) }
    }

    func line(_ t: Adoption.Target) -> String { "\(t.name) (\(t.application.appId))" }

    static func replicas(_ rs: [ReplicaName?]) -> String { rs.map(AdoptionRules.label).joined(separator: ", ") }

    func printPlan(_ adoption: Adoption, _ targets: [Adoption.Target]) async -> Int32 {
        print("Plan for \(targets.count) application(s); nothing is changed:")
        var refused = 0, failed = 0
        for e in await adoption.plan(targets) {
            switch e.decision {
            case .adopt(let w)?:
                var parts: [String] = []
                if w.needsMark { parts.append("tag \(Provisioner.managedTag), \(Provisioner.adoptedTag)") }
                if !w.orphans.isEmpty { parts.append("remove \(w.orphans.count) bootstrap(s) an interrupted run left without a bundle") }
                if !w.toIssue.isEmpty {
                    parts.append("bootstrap \(Self.replicas(w.toIssue)) → " + w.toIssue.map { adoption.bundlePath(w.application, $0) }.joined(separator: ", "))
                }
                if !w.kept.isEmpty { parts.append("keep \(Self.replicas(w.kept))") }
                parts.append("keeps \(w.plan.secrets) secret(s) and \(w.plan.foreignCertificates) other certificate(s) as they are")
                print("  adopt     \(line(e.target)): " + parts.joined(separator: "; "))
                if let l = w.lifetimes {
                    print("            certificates: \(l.maximumCertificateValidity.map { String(format: "at most %.2f days", $0 / 86_400) } ?? "no limit") — \(l.source); bootstrap \(String(format: "%.1f", l.bootstrapValidity / 3600)) h")
                    if let warning = l.warning { print("            warning: \(warning)") }
                }
            case .unchanged(let kept)?: print("  unchanged \(line(e.target)): already adopted; \(Self.replicas(kept)) hold their keys")
            case .alreadyManaged(let why)?: print("  skip      \(line(e.target)): \(why)")
            case .refuse(let why)?:
                refused += 1
                print("  REFUSE    \(line(e.target)): \(why)")
            case nil:
                failed += 1
                print("  FAILED    \(line(e.target)): \(e.failure ?? "?")")
            }
        }
        return failed > 0 ? 1 : refused > 0 ? 2 : 0
    }

    func execute(_ adoption: Adoption, _ targets: [Adoption.Target]) async -> Int32 {
        let progress = targets.count > 1 ? ProgressReporter(title: "adopt", total: targets.count) : nil
        let report = await adoption.execute(targets, progress: progress)
        var counts: [String: Int] = [:]
        for e in report.entries {
            switch e.outcome {
            case .adopted(_, let bundles, let kept, let lifetimes, let warning)?:
                counts["adopted", default: 0] += 1
                print("  adopted   \(line(e.target)): bundles \(bundles.isEmpty ? "none new" : bundles.joined(separator: ", "))"
                      + (kept.isEmpty ? "" : "; kept \(Self.replicas(kept))") + (lifetimes.map { "; certificates: \($0)" } ?? ""))
                if let warning { print("            warning: \(warning)") }
            case .unchanged(_, let kept)?:
                counts["unchanged", default: 0] += 1
                print("  unchanged \(line(e.target)): already adopted; \(Self.replicas(kept)) hold their keys")
            case .alreadyManaged(_, let why)?:
                counts["skipped", default: 0] += 1
                print("  skipped   \(line(e.target)): \(why)")
            case .refused(_, let why)?:
                counts["refused", default: 0] += 1
                print("  REFUSED   \(line(e.target)): \(why)")
            case nil:
                counts["failed", default: 0] += 1
                print("  FAILED    \(line(e.target)): \(e.failure ?? "?") (run the same command again: it resumes)")
            }
        }
        print(String(format: "%d application(s) in %.1f s: ", targets.count, report.seconds)
              + ["adopted", "unchanged", "skipped", "refused", "failed"].map { "\(counts[$0, default: 0]) \($0)" }.joined(separator: ", ")
              + "; throttled \(report.throttleEvents) times; recorded in \(auditLog)")
        if counts["adopted", default: 0] > 0 {
            print("On each app's host: keyroll import --bundle FILE --store DIR, then start the agent before the bootstrap expires (2 days, or less under a short policy).")
        }
        return report.failed > 0 ? 1 : report.refused > 0 ? 2 : 0
    }
}
