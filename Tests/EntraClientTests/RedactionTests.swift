import EntraClient
import Foundation
import PropertyBased
import Testing

/// The byte scanner behind `Redaction.scrub` against the regular expressions it replaced, used here
/// as an independent oracle, on texts built from the pieces secrets and near-misses are made of.
@Suite struct RedactionTests {
    static func oracle(_ text: String) -> String {
        var s = text
        for (pattern, template) in [
            (#"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-=]+\.[A-Za-z0-9_\-=]*"#, "[redacted-jwt]"),
            // `\z`, the very end: `$` would also stop before a final line break, leaving it unredacted
            (#"-----BEGIN [A-Z ]+-----[\s\S]*?(-----END [A-Z ]+-----|\z)"#, "[redacted-pem]"),
            (#"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]+"#, "$1[redacted]"),
            (#"(?i)(client_secret|client_assertion|secretText|proof|access_token)(["']?\s*[=:]\s*["']?)[^&"'\s,}]+"#, "$1$2[redacted]"),
        ] {
            let re = try! NSRegularExpression(pattern: pattern)
            s = re.stringByReplacingMatches(in: s, range: NSRange(s.startIndex..., in: s), withTemplate: template)
        }
        return s
    }

    static let pieces = ["eyJ", "eyJhbGciOiJSUzI1NiJ9", ".", "..", "abcd", "AB_-", "=", "==", " ", "\t", "\n", "\r\n", "&", ",", "}", "{", "\"", "'",
                         ":", "=", "Bearer", "bearer", "BEARER ", "client_secret", "Client_Assertion", "secretText", "proof", "access_token",
                         "-----BEGIN ", "-----END ", "PRIVATE KEY", "CERTIFICATE", "-----", "MIIE", "x", "é", "日本", "proofs", "token"]

    /// A text of `count` pieces chosen by a seeded generator (SplitMix64), so a failure reproduces.
    static func text(seed: Int, count: Int) -> String {
        var state = UInt64(bitPattern: Int64(seed))
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return (0..<count).map { _ in pieces[Int(next() % UInt64(pieces.count))] }.joined()
    }

    @Test func agreesWithTheRegularExpressionsItReplaced() async {
        await propertyCheck(count: Int(ProcessInfo.processInfo.environment["KEYROLL_REDACTION_CASES"] ?? "") ?? 2000, input: Gen.int(in: 0...Int.max)) { seed in
            let t = Self.text(seed: seed, count: 1 + seed % 40)
            #expect(Redaction.scrub(t) == Self.oracle(t), "seed \(seed): \(t.debugDescription)")
        }
    }

    @Test func scrubsEachKindOfSecret() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
        #expect(Redaction.scrub("token \(jwt) end") == "token [redacted-jwt] end")
        #expect(Redaction.scrub("a -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- b") == "a [redacted-pem] b")
        #expect(Redaction.scrub("cut -----BEGIN PRIVATE KEY-----\nMIIE") == "cut [redacted-pem]")
        #expect(Redaction.scrub("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]")
        #expect(Redaction.scrub("client_secret=hunter2&x=1") == "client_secret=[redacted]&x=1")
        #expect(Redaction.scrub(#"{"secretText": "s3cr3t", "hint": "s3c"}"#) == #"{"secretText": "[redacted]", "hint": "s3c"}"#)
        #expect(Redaction.scrub("nothing secret here: proofs, tokens") == "nothing secret here: proofs, tokens")
    }

    /// Hostile input (an 80 KiB query of `eyJ` with no dot, as a neighbour can send the token
    /// endpoint) costs time linear in its length: four times the input, about four times the work
    /// (the quadratic scan it replaced took about sixteen times, ~1 s of CPU at 80 KiB). A ratio of
    /// two runs in this process, not a clock bound.
    @Test func pathologicalInputIsScrubbedInLinearTime() {
        func seconds(_ copies: Int) -> Double {
            let text = String(repeating: "eyJ", count: copies) + String(repeating: "eyJa.", count: copies / 4)
            let start = ContinuousClock.now
            for _ in 0..<3 { _ = Redaction.scrub(text) }
            let d = ContinuousClock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        _ = seconds(1000)  // warm up
        let small = seconds(6_500), large = seconds(26_000)
        #expect(large / small < 8, "4× the input took \(String(format: "%.1f", large / small))× the time (\(large) s vs \(small) s): not linear")
        // skipping past a dead end never skips a real token after it
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
        #expect(Redaction.scrub("eyJab=eyJabc " + jwt) == "eyJab=eyJabc [redacted-jwt]")
    }
}
