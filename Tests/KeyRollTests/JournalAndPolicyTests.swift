import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
import Testing

@Suite struct JournalAndPolicyTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func record(_ t: String, origin: CredentialOrigin = .keyroll, days: Double = 365, keyId: String? = nil) -> CredentialRecord {
        CredentialRecord(thumbprint: t, notBefore: t0, notAfter: t0.addingTimeInterval(days * 86_400), keyId: keyId, origin: origin)
    }

    @Test func transitionsFollowTheStateMachineOnly() throws {
        let j0 = Journal(active: record("OLD", origin: .bootstrap, days: 2, keyId: "k-old"))
        #expect(throws: Journal.TransitionError.self) { try j0.added(keyId: "x", now: t0) }
        let j1 = try j0.beginning(new: record("NEW"), now: t0, reason: "test")
        #expect(throws: Journal.TransitionError.self) { try j1.beginning(new: record("NEW2"), now: t0, reason: "again") }
        #expect(throws: Journal.TransitionError.self) { try j1.switched(now: t0) }
        let j2 = try j1.added(keyId: "k-new", now: t0)
        #expect(j2.credential("NEW")?.keyId == "k-new")
        let j3 = try j2.visible(now: t0)
        let j4 = try j3.verified(now: t0)
        #expect(j4.credential("NEW")?.lastProvenAt == t0)
        #expect(j4.active == "OLD", "switching is its own step")
        let j5 = try j4.switched(now: t0)
        #expect(j5.active == "NEW")
        #expect(throws: Journal.TransitionError.self) { try j5.abandoning(reason: "too late", now: t0) }
        #expect(j5.roll?.needsKey("OLD") == false, "after the switch only the old key's thumbprint is needed")
        let j6 = try j5.reloaded(now: t0.addingTimeInterval(5))
        #expect(j6.roll?.reloadedAt == t0.addingTimeInterval(5))
        #expect(j6.roll?.phaseSince == t0, "recording the hook does not move the phase's start")
        let j7 = try j6.finished(now: t0, removedKeyIds: ["k-old"])
        #expect(j7.roll == nil)
        #expect(j7.credentials.map(\.thumbprint) == ["OLD", "NEW"], "the old key is retained, not forgotten")
        #expect(j7.credential("OLD")?.isRetained == true && j7.credential("NEW")?.isRetained == false)
        #expect(j7.tombstones.map(\.thumbprint) == ["OLD"] && j7.tombstones.first?.keyIds == ["k-old"])
        #expect(j7.requiredKeys == ["NEW"], "a retained key is not required to start")
        #expect(j7.history.last?.outcome == "rolled")
        #expect(throws: Journal.TransitionError.self, "the active key is never released") { try j7.released("NEW") }
        let j8 = try j7.released("OLD")
        #expect(j8.credentials.map(\.thumbprint) == ["NEW"])
        #expect(j8.tombstones.map(\.thumbprint) == ["OLD"], "the tombstone outlives the retained key")
        #expect(j8.pruningTombstones(now: t0.addingTimeInterval(400 * 86_400)).tombstones.isEmpty, "tombstones go when the key has expired")
        // without the old key's file nothing is retained
        #expect(try j6.finished(now: t0, retain: false).credentials.map(\.thumbprint) == ["NEW"])
        // a new key dropped by a stale write before the switch: back to stored, registered again
        let d = try j4.dropped(now: t0)
        #expect(d.roll?.phase == .stored && d.roll?.reregistrations == 1 && d.credential("NEW")?.keyId == nil && d.active == "OLD")
        #expect(throws: Journal.TransitionError.self, "a switched roll repairs instead") { try j5.dropped(now: t0) }
        // abandoning before the switch drops the new credential, keeps the old active
        let a = try (try j2.abandoning(reason: "timeout", now: t0)).abandoned(now: t0)
        #expect(a.active == "OLD")
        #expect(a.credentials.map(\.thumbprint) == ["OLD"])
        #expect(a.history.last?.outcome == "abandoned: timeout")
    }

    @Test func journalSurvivesEncoding() throws {
        let j = try Journal(active: record("A", origin: .bootstrap)).beginning(new: record("B"), now: t0, reason: "r")
        let enc = JSONEncoder(); enc.dateEncodingStrategy = .iso8601
        let dec = JSONDecoder(); dec.dateDecodingStrategy = .iso8601
        #expect(try dec.decode(Journal.self, from: enc.encode(j)) == j)
    }

    @Test func rollDatesAndJitter() {
        let p = RollPolicy()
        let boot = record("B", origin: .bootstrap, days: 2)
        #expect(p.rollDate(for: boot, random: 0.9) == boot.notBefore, "bootstrap rolls at once")
        let c = record("C")
        let mid = p.rollDate(for: c, random: 0.5)
        #expect(abs(mid.timeIntervalSince(t0) - 365 * 86_400 * 2 / 3) < 1)
        let early = p.rollDate(for: c, random: 0), late = p.rollDate(for: c, random: 1)
        #expect(abs(late.timeIntervalSince(early) - 2 * 0.05 * 365 * 86_400) < 1)
        var clipped = RollPolicy()
        clipped.tenantMaximumValidity = 180 * 86_400
        #expect(clipped.effectiveValidity == 180 * 86_400)
        // the whole window, backdate included, stays inside the tenant's cap
        let w = clipped.newCertificateWindow(now: t0)
        #expect(w.notBefore == t0.addingTimeInterval(-300))
        #expect(w.notAfter.timeIntervalSince(w.notBefore) <= 180 * 86_400 - 60)
        #expect(RollPolicy().newCertificateWindow(now: t0).notAfter == t0.addingTimeInterval(365 * 86_400), "without a cap, validity from now")
        // the subject carries KeyRoll's marker: keyroll- first, no @ (the replica separator)
        for bad in ["svc-{appId}", "keyroll-x@r3"] {
            var p = RollPolicy()
            p.subject = bad
            #expect(throws: RollPolicy.Invalid.self, "\(bad)") { try p.validated() }
        }
    }

    @Test func cliffAndAlarms() throws {
        let p = RollPolicy()
        var j = Journal(active: record("A", days: 10, keyId: "ka"))
        let both: Set = ["A", "B"]
        #expect(RollPolicy.cliff(of: j, keysOnDisk: both) == t0.addingTimeInterval(10 * 86_400))
        // a pending key that Entra has not registered yet does not move the cliff
        j = try j.beginning(new: record("B", days: 365), now: t0, reason: "r")
        #expect(RollPolicy.cliff(of: j, keysOnDisk: both) == t0.addingTimeInterval(10 * 86_400))
        j = try j.added(keyId: "kb", now: t0)
        #expect(RollPolicy.cliff(of: j, keysOnDisk: both) == t0.addingTimeInterval(365 * 86_400))
        // the cliff comes from what exists: a key whose file is gone, or that Graph no longer lists, does not count
        #expect(RollPolicy.cliff(of: j, keysOnDisk: ["A"]) == t0.addingTimeInterval(10 * 86_400))
        #expect(RollPolicy.cliff(of: j, keysOnDisk: both, inEntra: ["A"]) == t0.addingTimeInterval(10 * 86_400))
        // nor does a key the roll is giving up
        let leaving = try j.abandoning(reason: "r", now: t0)
        #expect(RollPolicy.cliff(of: leaving, keysOnDisk: both) == t0.addingTimeInterval(10 * 86_400))
        #expect(RollPolicy.cliff(of: j, keysOnDisk: []) == nil)
        #expect(p.alarm(timeToCliff: 30 * 86_400) == .ok)
        #expect(p.alarm(timeToCliff: 10 * 86_400) == .warning)
        #expect(p.alarm(timeToCliff: 86_400) == .critical)
        #expect(p.alarm(timeToCliff: -1) == .pastCliff)
        #expect(p.alarm(timeToCliff: nil) == .pastCliff)
    }

    @Test func bundleFormatIsVersioned() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let cred = try SigningCredential.generate(subject: .init(commonName: "b"), notBefore: now, notAfter: now.addingTimeInterval(86_400))
        let b = try BootstrapBundle(tenantId: "t", authorityHost: "https://login", graphBaseURL: "https://graph/v1.0", applicationObjectId: "o",
                                appId: "a", displayName: "n", credential: cred, keyId: "k", createdAt: now, createdBy: nil)
        let back = try BootstrapBundle.decode(try b.encoded())
        #expect(back == b)
        #expect(try back.signingCredential().certificate == cred.certificate)
        var v2 = try JSONValue.parse(try b.encoded()).objectValue!
        v2["format"] = "keyroll-bootstrap/2"
        #expect(throws: BootstrapBundle.BundleError.unsupportedFormat("keyroll-bootstrap/2")) { try BootstrapBundle.decode(JSONValue.object(v2).serialized()) }
        #expect(throws: BootstrapBundle.BundleError.self) { try BootstrapBundle.decode(Array("{}".utf8)) }
    }
}
