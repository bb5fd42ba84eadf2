import ArgumentParser
import EntraClient
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import Provisioning

struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets",
        abstract: "Client secrets of an app that signs in with KeyRoll's key: retire them on evidence.",
        subcommands: [SecretsRetireCommand.self])
}

struct SecretsRetireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retire",
        abstract: "Remove an app's client secrets only on evidence that nothing uses them (plan by default; --apply is privileged and audited).",
        discussion: """
            A secret goes only when all of these hold for the last W days (--window-days, default 14): (a) the app signed in \
            with a KeyRoll-managed certificate (its agent, or the agent's token endpoint) on each of them; (b) no sign-in \
            presented the secret, and W fits in the sign-in log's retention; (c) the app has no delegated (user) sign-in, or \
            you acknowledge them with --acknowledge-delegated. The evidence is Graph's sign-in log (AuditLog.Read.All, Entra \
            ID P1/P2), with the credential report as a second source. Anything short of it is refused with the reason and \
            the date the evidence would suffice. --apply decides again from a fresh read, records the intent before each \
            removal and the outcome after it. A removed secret cannot be brought back. Exit status: 0, or 1 when --apply \
            refused a secret.
            """)

    @Option(name: .long, help: "The application's appId, object id, or the name it was provisioned under.")
    var app: String

    @Option(name: .long, help: "Only this secret (its keyId); default: every client secret of the app.")
    var secret: String?

    @Option(name: .long, help: "W: the days of evidence required (default 14).")
    var windowDays: Int = SecretRetirementRules.defaultWindowDays

    @Option(name: .long, help: "Days the tenant's sign-in log keeps (30 with Entra ID P1/P2).")
    var logRetentionDays: Double = 30

    @Flag(name: .long, help: "Retire even though the app shows delegated (user) sign-ins in the window (you know they do not use the secret).")
    var acknowledgeDelegated = false

    @Flag(name: .long, help: "Show the evidence and the decisions; change nothing (the default).")
    var plan = false

    @Flag(name: .long, help: "Remove the secrets the evidence allows (privileged, audited).")
    var apply = false

    @Option(name: .long, help: "Why (recorded in the audit log; required with --apply).")
    var reason: String?

    @Option(name: .long, help: "Audit log (JSON lines, appended).")
    var auditLog = "keyroll-audit.log"

    @OptionGroup var identity: ProvisionerOptions

    func validate() throws {
        guard !(plan && apply) else { throw ValidationError("--plan and --apply exclude each other: --plan (the default) shows the evidence, --apply removes.") }
        guard (1...365).contains(windowDays) else { throw ValidationError("--window-days \(windowDays) must be between 1 and 365 (14 is the default).") }
        guard logRetentionDays.isFinite, logRetentionDays > 0, logRetentionDays <= 3650 else {
            throw ValidationError("--log-retention-days \(logRetentionDays) must be a number of days above 0 (30 with Entra ID P1/P2).")
        }
        if apply, (reason ?? "").trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--apply needs --reason \"…\": every removal is recorded in the audit log with why.")
        }
        if let secret, UUID(uuidString: secret) == nil {
            throw ValidationError("--secret \(secret.prefix(64)) is not a keyId (a GUID); `keyroll secrets retire --app \(app)` lists the app's secrets.")
        }
    }

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        let (provisioner, transport) = try identity.connect()
        let retirement = SecretRetirement(provisioner: provisioner, auditLogPath: auditLog, windowDays: windowDays, retentionDays: logRetentionDays)
        let who = Environment.current["USER"] ?? Environment.current["LOGNAME"] ?? "unknown"
        do {
            if apply {
                let outcomes = try await transport.closing {
                    let target = try await ApplicationLookup.find(app, in: provisioner.graph)
                    return try await retirement.apply(application: target, secretKeyId: secret, acknowledgeDelegated: acknowledgeDelegated,
                                                      reason: reason ?? "", operator: who)
                }
                print(SecretsOutput.outcomes(outcomes, auditLog: auditLog))
                if outcomes.contains(where: { if case .refused = $0 { return true }; return false }) { throw ExitCode(1) }
            } else {
                let p = try await transport.closing {
                    let target = try await ApplicationLookup.find(app, in: provisioner.graph)
                    return try await retirement.plan(application: target, secretKeyId: secret, acknowledgeDelegated: acknowledgeDelegated)
                }
                print(SecretsOutput.plan(p, app: app))
            }
        } catch let r as SecretRetirement.Refused {
            throw UserFacingError(r.description)
        }
    }
}

/// What `keyroll secrets retire` prints: per secret the evidence, the decision, and for a refusal
/// the reasons and the date the evidence would suffice. Never a secret's text (Graph shows it only
/// when a secret is made; KeyRoll never has it).
enum SecretsOutput {
    static func plan(_ p: SecretRetirement.Plan, app: String) -> String {
        let name = p.application.displayName ?? p.application.appId
        guard !p.decisions.isEmpty else { return "\(name) has no client secret: nothing to retire." }
        var out = p.decisions.map(describe)
        if let r = p.reportFailure { out.append("Note: the credential report (second source) could not be read (\(r.rawValue)); the sign-in log alone was used.") }
        let ready = p.decisions.filter(\.retires).count
        out.append(ready == 0
            ? "Nothing would be removed. Nothing was changed (plan)."
            : "\(ready) secret(s) would be removed: keyroll secrets retire --app \(app) --apply --reason \"…\". Nothing was changed (plan). A removed secret cannot be brought back.")
        return out.joined(separator: "\n\n")
    }

    static func outcomes(_ outcomes: [SecretRetirement.Outcome], auditLog: String) -> String {
        guard !outcomes.isEmpty else { return "The app has no client secret: nothing to retire." }
        return outcomes.map { o -> String in
            switch o {
            case .removed(let e, let note):
                return "Secret \(e.keyId) (\(e.displayName ?? "unnamed")) of \(e.app): removed; recorded in \(auditLog). A removed secret cannot be brought back (a new one would be a different secret)."
                    + (note.map { "\n  note: \($0)" } ?? "")
            case .settled(let keyId):
                return "Secret \(keyId): an earlier run recorded its intent and stopped; Graph no longer lists the secret, so its removal is now recorded as completed in \(auditLog)."
            case .refused(let d):
                return describe(d)
            }
        }.joined(separator: "\n\n")
    }

    static func describe(_ d: SecretDecision) -> String {
        let e = d.evidence
        var lines = ["Secret \(e.keyId) (\(e.displayName ?? "unnamed")\(e.end.map { ", expires \(UTCTime.iso($0))" } ?? "")) of \(e.app):"]
        if let failure = e.log {
            lines.append("  evidence: the sign-in log could not be read (\(failure.rawValue))")
        } else {
            let use = e.lastSecretUse.map { "\(UTCTime.iso($0)) (\($0 > e.windowStart ? "in" : "before") the window; \(e.lastSecretUseSource.rawValue))" }
                ?? "none in the last \(e.windowDays) days (the log keeps \(SecretRetirementRules.formatDays(e.retentionDays)))"
            lines.append("  last use of this secret: \(use)")
            lines.append("  KeyRoll sign-ins: \(e.keyRollDaysCovered) of the last \(e.windowDays) days, \(e.keyRollDaysUnbroken) in a row up to now"
                         + (e.lastKeyRollSignIn.map { ", last \(UTCTime.iso($0))" } ?? "") + (e.keyRollKeyIds.isEmpty ? " (no KeyRoll key registered)" : ""))
            lines.append("  delegated (user) sign-ins in the window: \(e.delegatedSignIns)" + (e.delegatedSignIns > 0 ? " by \(e.delegatedUsers) user(s)\(e.delegatedAcknowledged ? ", acknowledged" : "")" : ""))
        }
        switch d {
        case .retire:
            lines.append("  decision: retire (the evidence suffices)")
        case .refuse(_, let reasons, let at):
            lines.append("  decision: refused")
            lines += reasons.map { "    - \($0)" }
            lines.append("  the evidence would suffice: " + (at.map { "from \(UTCTime.iso($0)) if nothing changes" } ?? "not by waiting (see above)"))
        }
        return lines.joined(separator: "\n")
    }
}
