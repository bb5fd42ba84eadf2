import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
import Provisioning
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every parser that reads what a user, a file or the network hands KeyRoll, fed mutated inputs
/// from valid seeds: no crash, no hang (each input is timed), no unbounded memory (peak RSS is
/// checked). CI runs a seeded 1,000 inputs per parser; `KEYROLL_FUZZ_CASES=100000 swift test
/// --filter ParserFuzzTests` is the benchmark-style run (docs/security.md gives its result).
@Suite(.serialized) struct ParserFuzzTests {
    static let cases = Int(ProcessInfo.processInfo.environment["KEYROLL_FUZZ_CASES"] ?? "") ?? 1000
    static let seed = UInt64(ProcessInfo.processInfo.environment["KEYROLL_FUZZ_SEED"] ?? "") ?? 0x4B52_4655_5A5A

    /// Mutations drawn from KeyRoll's seedable PRNG: the same sequence on every machine.
    struct Mutator {
        var random: SplitMix64
        init(seed: UInt64) { random = SplitMix64(seed: seed) }
        mutating func next() -> UInt64 { random.next() }
        mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }

        static let tokens: [[UInt8]] = ["{", "}", "[", "]", "\"", ",", ":", "\n", "\\u0000", "*a", "&a ", "- ", "'", "''", "-----BEGIN ", "-----END ",
                                        "=", ".", "..", "/", "\u{0}", "\r\n", "1e999", "-0", "null", "true", "\u{FEFF}", "\\", "%", "é"].map { Array($0.utf8) }

        /// 1 to 4 edits: bit flips, random bytes, inserted tokens, deleted or repeated ranges, truncation.
        mutating func mutate(_ input: [UInt8]) -> [UInt8] {
            var b = input
            for _ in 0...below(4) {
                let at = below(b.count + 1)
                switch below(7) {
                case 0 where !b.isEmpty: b[below(b.count)] ^= UInt8(1 << below(8))
                case 1 where !b.isEmpty: b[below(b.count)] = UInt8(truncatingIfNeeded: next())
                case 2: b.insert(contentsOf: Self.tokens[below(Self.tokens.count)], at: at)
                case 3 where !b.isEmpty: b.removeSubrange(at..<min(b.count, at + 1 + below(16)))
                case 4 where at < b.count:
                    let end = min(b.count, at + 1 + below(32))
                    b.insert(contentsOf: Array(b[at..<end]), at: end)
                case 5: b = Array(b.prefix(at))
                default: b.insert(contentsOf: (0..<(1 + below(8))).map { _ in UInt8(truncatingIfNeeded: next()) }, at: at)
                }
            }
            return b
        }
    }

    struct Target: Sendable, CustomStringConvertible {
        let description: String
        let seeds: [[UInt8]]
        let parse: @Sendable ([UInt8]) throws -> Void
    }

    static func targets() throws -> [Target] {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let cred = try SigningCredential.generate(subject: .init(commonName: "fuzz"), notBefore: now, notAfter: now.addingTimeInterval(86_400))
        let bundle = try BootstrapBundle(tenantId: "t", authorityHost: "https://login.example", graphBaseURL: "https://graph.example/v1.0",
                                     applicationObjectId: "o", appId: "a", displayName: "n", credential: cred, keyId: "k", createdAt: now, createdBy: nil)
        var journal = Journal(active: CredentialRecord(thumbprint: String(repeating: "A", count: 40), notBefore: now, notAfter: now, keyId: "k", origin: .bootstrap))
        journal = try journal.beginning(new: CredentialRecord(thumbprint: String(repeating: "B", count: 40), notBefore: now, notAfter: now, keyId: nil, origin: .keyroll),
                                        now: now, reason: "fuzz")
        let jws = try ClientAssertion.make(clientID: "c", tokenEndpoint: "https://login.example/t/oauth2/v2.0/token", credential: cred, now: now)
        let u = { (s: String) in Array(s.utf8) }
        let text: @Sendable ([UInt8]) -> String = { String(decoding: $0, as: UTF8.self) }
        return [
            Target(description: "manifest CSV", seeds: [u("name,tags,notes,owners,bundle\norders,env:prod;tier:1,\"a, \"\"b\"\"\",ops@x,o.json\nbilling,,,,\n")]) {
                _ = try Manifest.parseCSV(text($0), baseDir: "/m")
            },
            Target(description: "manifest YAML", seeds: [u("defaults:\n  bundleDir: out\n  tags: [a]\napps:\n  - name: x\n    tags: [b, c]\n    notes: \"n\"\n  - {name: y, bundle: y.json}\n"),
                                                       u("x: &a [1, 2]\napps: [{name: z, tags: *a}]\n")]) {
                _ = try Manifest.parseYAML(text($0), baseDir: "/m")
            },
            Target(description: "bootstrap bundle", seeds: [try bundle.encoded()]) { _ = try BootstrapBundle.decode($0).signingCredential() },
            Target(description: "journal", seeds: [Array(try JSONEncoder.readable().encode(journal))]) {
                _ = try JSONDecoder.utcDates().decode(Journal.self, from: Data($0))
            },
            Target(description: "policy file", seeds: [u(#"{"validityDays": 365, "rollAtFraction": 0.6, "jitterFraction": 0.05, "subject": "x-{appId}", "keySize": 3072}"#)]) {
                _ = try RollPolicy.parsingFile($0).validated()
            },
            Target(description: "PEM private key", seeds: [u(try cred.privateKey.pkcs8PEM)]) { _ = try RSAPrivateKey(pem: text($0)) },
            Target(description: "PEM certificate + key", seeds: [u(try cred.combinedPEM)]) { _ = try SigningCredential(combinedPEM: text($0)) },
            Target(description: "DER certificate", seeds: [cred.certificate.der]) { _ = try X509Certificate(der: $0) },
            Target(description: "DER private key", seeds: [try cred.privateKey.pkcs8DER]) { _ = try RSAPrivateKey(der: $0) },
            Target(description: "PKCS#12", seeds: [try pkcs12(cred)]) { _ = try SigningCredential(pkcs12: $0, passphrase: "fuzz") },
            Target(description: "compact JWS", seeds: [u(jws)]) { _ = try CompactJWS(parsing: text($0)) },
            Target(description: "JSON value", seeds: [u(#"{"a": [1, 2.5, "x", null, true, {"b": {}}]}"#)]) { _ = try JSONValue.parse($0) },
        ]
    }

    static func pkcs12(_ cred: SigningCredential) throws -> [UInt8] {
        let dir = try Tools.temporaryDirectory("p12")
        try SecureFiles.writeAtomically(cred.combinedPEM, to: dir + "/c.pem")
        let r = try Tools.run(["openssl", "pkcs12", "-export", "-in", dir + "/c.pem", "-out", dir + "/c.p12", "-passout", "pass:fuzz"])
        guard r.status == 0 else { throw ToolError("openssl pkcs12: \(r.stderr)") }
        return try SecureFiles.read(dir + "/c.p12")
    }

    static func peakRSSKiB() -> Int {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return u.ru_maxrss
    }

    @Test func everyParserSurvivesMutatedInput() throws {
        let rssBefore = Self.peakRSSKiB()
        var report: [String] = []
        for (i, target) in try Self.targets().enumerated() {
            var m = Mutator(seed: Self.seed &+ UInt64(i))
            var accepted = 0, refused = 0, slowest = 0.0
            // the seeds themselves, and pathological shapes, before the mutants
            let extremes: [[UInt8]] = [[], Array(repeating: UInt8(ascii: "["), count: 100_000), Array(repeating: UInt8(ascii: "{"), count: 10_000) + [UInt8(ascii: "\"")],
                                       Array(repeating: 0, count: 70_000), Array(repeating: 0xFF, count: 1000)]
            var inputs = target.seeds + extremes
            var corpus = target.seeds
            var n = 0
            while n < Self.cases {
                let input = n < inputs.count ? inputs[n] : m.mutate(corpus[m.below(corpus.count)])
                let started = DispatchTime.now().uptimeNanoseconds
                do { try target.parse(input); accepted += 1; if corpus.count < 64 { corpus.append(input) } } catch { refused += 1 }
                slowest = max(slowest, Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
                n += 1
                if n == inputs.count { inputs = [] }
            }
            #expect(slowest < 2, "\(target): one input took \(slowest) s")
            report.append("\(target): \(n) inputs, \(accepted) accepted, \(refused) refused, slowest \(String(format: "%.1f", slowest * 1000)) ms")
        }
        let grown = (Self.peakRSSKiB() - rssBefore) / 1024
        #expect(grown < 512, "peak memory grew by \(grown) MiB")
        print("fuzz (seed \(Self.seed), \(Self.cases) per parser; peak RSS grew \(grown) MiB):\n  " + report.joined(separator: "\n  "))
    }
}
