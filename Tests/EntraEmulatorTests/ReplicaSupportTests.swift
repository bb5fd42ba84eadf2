import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// What a multi-host app needs of the emulator: a read-merge-PATCH that re-sends a sibling's key
/// leaves it as it was (its propagation included), the credential limit is a setting, and a PUT
/// of the settings may name only what it changes.
@Suite struct ReplicaSupportTests {
    func entry(_ cred: SigningCredential, keyId: String, name: String) -> JSONValue {
        .object(["keyId": .string(keyId), "type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(cred.certificate.der)),
                 "displayName": .string(name)])
    }

    @Test(arguments: [false, true])
    func aPatchThatResendsAKeyKeepsItsPropagationUnlessTheSettingSaysOtherwise(repropagates: Bool) async throws {
        var s = EmulatorSettings()
        s.propagationDelayMin = 120
        s.propagationDelayMax = 120
        s.patchRepropagatesExistingKeys = repropagates
        let w = try await GraphWorld(s)
        w.rig.clock.advance(by: 121)  // the app's first certificate has propagated
        let sibling = try w.rig.credential("sibling", days: 30)
        let siblingId = UUID().uuidString.lowercased()
        let first = await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken,
                                      json: .object(["keyCredentials": .array([entry(w.boot, keyId: try w.rig.emulator.keyCredentials(appId: w.app.appId)[0].keyId, name: "CN=boot"),
                                                                                entry(sibling, keyId: siblingId, name: "CN=keyroll-x@r2")])]))
        #expect(first.status == 204, "\(String(decoding: first.body, as: UTF8.self))")
        w.rig.clock.advance(by: 121)
        let before = try w.rig.emulator.keyCredentials(appId: w.app.appId)
        #expect(before.allSatisfy { $0.activeAt <= w.rig.clock.now() })
        // a provisioner's merge PATCH: everything re-sent as read, plus one new bootstrap
        let newcomer = try w.rig.credential("keyroll-bootstrap@r3", days: 2)
        let resend = before.map { k -> JSONValue in
            .object(["keyId": .string(k.keyId), "type": .string(k.type), "usage": .string(k.usage), "key": .string(Base64.encode(k.key)),
                     "displayName": .string(k.displayName ?? "")])
        } + [entry(newcomer, keyId: UUID().uuidString.lowercased(), name: "CN=keyroll-bootstrap@r3")]
        let second = await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: .object(["keyCredentials": .array(resend)]))
        #expect(second.status == 204)
        let after = try w.rig.emulator.keyCredentials(appId: w.app.appId)
        let now = w.rig.clock.now()
        for k in before {
            let same = try #require(after.first { $0.keyId == k.keyId })
            #expect((same.activeAt <= now) == !repropagates, "\(k.displayName ?? ""): active at \(same.activeAt), now \(now)")
        }
        // the sibling signs in at once, unless re-sent keys propagate again
        let token = await w.rig.tokenResponse(clientID: w.app.appId, assertion: try ClientAssertion.make(clientID: w.app.appId, tokenEndpoint: w.rig.tokenEndpoint, credential: sibling, now: now))
        #expect(token.status == (repropagates ? 401 : 200), "\(String(decoding: token.body, as: UTF8.self))")
    }

    @Test func aSettingsPutNamesOnlyWhatItChanges() async throws {
        let rig = try EmulatorRig()
        let put = await rig.request("PUT", "/_emulator/settings", headers: ["content-type": "application/json"],
                                    body: Array(#"{"maxCredentialItems": 8, "throttling": {"enabled": true}}"#.utf8))
        #expect(put.status == 200, "\(String(decoding: put.body, as: UTF8.self))")
        #expect(rig.emulator.settings.maxCredentialItems == 8 && rig.emulator.settings.throttling.enabled)
        #expect(rig.emulator.settings.throttling.writesPerWindow == 3000 && rig.emulator.settings.tokenLifetime == 3599, "the rest is kept")
        let bad = await rig.request("PUT", "/_emulator/settings", headers: ["content-type": "application/json"], body: Array(#"{"maxCredentialItem": 8}"#.utf8))
        #expect(bad.status == 400 && String(decoding: bad.body, as: UTF8.self).contains("unknown setting 'maxCredentialItem'"))
        #expect(rig.emulator.settings.maxCredentialItems == 8, "a refused PUT changes nothing")
    }
}
