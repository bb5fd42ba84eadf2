import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives

/// Roll policy from a JSON file, then flags (flags win).
struct PolicyOptions: ParsableArguments {
    @Option(name: .long, help: "JSON file with roll policy fields (validityDays, rollAtFraction, jitterFraction, keySize, verifySuccesses, verifyTimeoutSeconds, warnDays, criticalDays, tenantMaximumValidityDays, settleSeconds, retainedKeyHours, registrationCheckSeconds, …; see docs/policy.md).")
    var policyFile: String?

    @Option(name: .long, help: "Validity of new certificates in days (default 365).")
    var validityDays: Double?

    @Option(name: .long, help: "Roll when this fraction of the lifetime has passed (default 0.667).")
    var rollAt: Double?

    @Option(name: .long, help: "RSA key size of new keys: 2048, 3072 or 4096 (default 2048).")
    var keySize: Int?

    @Option(name: .long, help: "Consecutive token successes needed with a new key (default 2).")
    var verifySuccesses: Int?

    @Option(name: .long, help: "Seconds to wait for a new key to be accepted before abandoning the roll (default 600).")
    var verifyTimeout: Double?

    /// The policy: defaults, then the file (`--policy-file` or `KEYROLL_POLICY_FILE`), then flags.
    /// Unknown fields, wrong types and values that could lock an app out are refused, naming the
    /// field and what it must be.
    func policy() throws -> RollPolicy {
        var p = RollPolicy()
        if let path = policyFile ?? Environment.current["KEYROLL_POLICY_FILE"] {
            guard let bytes = FileManager.default.contents(atPath: path) else { throw UserFacingError("Cannot read the policy file \(path).") }
            do { p = try RollPolicy.parsingFile(Array(bytes)) } catch let e as RollPolicy.FileError {
                throw UserFacingError("Policy file \(path): \(e.description)")
            }
        }
        if let v = validityDays { p.validity = v * 86_400 }
        if let v = rollAt { p.rollAtFraction = v }
        if let v = keySize {
            do { p.keySize = try RSAKeySize(bits: v) } catch { throw ValidationError("--key-size: \(error)") }
        }
        if let v = verifySuccesses { p.verifySuccesses = v }
        if let v = verifyTimeout { p.verifyTimeout = v }
        do { return try p.validated() } catch let e as RollPolicy.Invalid {
            throw UserFacingError("The roll policy is refused: \(e.description).")
        }
    }
}

/// Which stores to act on: `--store` (repeatable) or `KEYROLL_STORE` (colon-separated).
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "A KeyRoll store folder (repeat for several identities; default: $KEYROLL_STORE, colon-separated).")
    var store: [String] = []

    func paths() throws -> [String] {
        let paths = store.isEmpty ? (Environment.current["KEYROLL_STORE"] ?? "").split(separator: ":").map(String.init) : store
        guard !paths.isEmpty else { throw ValidationError("Name a store: --store DIR (or set KEYROLL_STORE).") }
        return paths
    }
}

/// TLS trust for talking to an emulator (or a proxy with its own CA).
struct TrustOptions: ParsableArguments {
    @Option(name: .long, help: "Extra CA certificate(s) to trust, PEM (default: $KEYROLL_CA_FILE), e.g. the emulator's ca.pem.")
    var caFile: String?

    func transport() throws -> AsyncHTTPTransport {
        let path = caFile ?? Environment.current["KEYROLL_CA_FILE"]
        var pem: String?
        if let path {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw UserFacingError("Cannot read the CA file \(path).") }
            pem = text
        }
        return try AsyncHTTPTransport(additionalCAPEM: pem)
    }
}

extension AsyncHTTPTransport {
    /// Runs `body`, then shuts the transport down whether `body` returned or threw (an HTTP client
    /// must never be left running). A failure to shut down is reported only when `body` succeeded.
    func closing<T>(after body: () async throws -> T) async throws -> T {
        let result: T
        do { result = try await body() } catch {
            try? await shutdown()
            throw error
        }
        try await shutdown()
        return result
    }
}

/// The process environment as the CLI reads it: a variable set to the empty string counts as
/// unset (`AZURE_TENANT_ID=` must not become a tenant named "").
struct Environment {
    let values: [String: String]
    static var current: Environment { Environment(values: ProcessInfo.processInfo.environment) }
    subscript(_ name: String) -> String? {
        guard let v = values[name], !v.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        return v
    }
}

/// A whole command's time limit: `body` is cancelled when it runs out, and the command fails with
/// a message that says so (whatever it had made durable stays: a roll resumes from its journal).
enum Deadline {
    static func run<T: Sendable>(seconds: Double, what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw UserFacingError("\(what) did not finish within \(Int(seconds)) s (--timeout) and was stopped; what it had done is kept, and the next run resumes it.")
            }
            return value
        }
    }
}
