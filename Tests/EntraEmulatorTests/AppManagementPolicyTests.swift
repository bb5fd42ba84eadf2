import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// ``GraphWorld`` plus a policy administrator (Policy.ReadWrite.ApplicationConfiguration and
/// Application.Read.All) and a policy reader (Policy.Read.All), each with a Graph token: the starting
/// point of the app management policy tests.
struct PolicyWorld {
    let graph: GraphWorld
    let writerToken: String
    let readerToken: String
    var rig: EmulatorRig { graph.rig }

    init(_ settings: EmulatorSettings = .init()) async throws {
        graph = try await GraphWorld(settings)
        let rig = graph.rig
        let writerCred = try rig.credential("policy-admin", days: 30)
        let writer = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "policy-admin",
                                               roles: [.policyReadWriteApplicationConfiguration, .applicationReadAll], certificates: [writerCred.certificate])
        let readerCred = try rig.credential("policy-reader", days: 30)
        let reader = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "policy-reader", roles: [.policyReadAll],
                                               certificates: [readerCred.certificate])
        writerToken = try await rig.token(clientID: writer.appId, credential: writerCred)
        readerToken = try await rig.token(clientID: reader.appId, credential: readerCred)
    }
}

@Suite struct AppManagementPolicyTests {
    static let defaultID = "00000000-0000-0000-0000-000000000000"
    static let defaultPath = "/v1.0/policies/defaultAppManagementPolicy"

    /// A `passwordCredentialConfiguration` / `keyCredentialConfiguration` as Graph writes it (`state`
    /// left out when nil, as clients may send it).
    func restriction(_ type: String, max: String? = nil, after: Date? = nil, state: String? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["restrictionType": .string(type), "maxLifetime": max.map(JSONValue.string) ?? .null,
                                      "restrictForAppsCreatedAfterDateTime": after.map { .string(UTCTime.iso($0)) } ?? .null]
        if let state { o["state"] = .string(state) }
        return .object(o)
    }

    func restrictions(passwords: [JSONValue] = [], keys: [JSONValue] = []) -> JSONValue {
        .object(["passwordCredentials": .array(passwords), "keyCredentials": .array(keys)])
    }

    /// Graph's refusal by an app management policy, exactly: 400, the code, the message naming the policy.
    func expectRefusal(_ r: EmulatorResponse, _ code: String, policy policyID: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let message = code == "CredentialTypeNotAllowedAsPerAppPolicy"
            ? "Credential type not allowed as per assigned policy '\(policyID)'."
            : "Credential lifetime exceeds the max value allowed as per assigned policy '\(policyID)'."
        #expect(r.status == 400, sourceLocation: sourceLocation)
        #expect(r.json?["error"]?["code"]?.stringValue == code, sourceLocation: sourceLocation)
        #expect(r.json?["error"]?["message"]?.stringValue == message, sourceLocation: sourceLocation)
    }

    /// addPassword by the provisioner (Application.ReadWrite.All), ending in `days` (Graph's default
    /// of two years when nil).
    func addPassword(_ w: GraphWorld, _ objectID: String, days: Double? = nil) async -> EmulatorResponse {
        var pc: [String: JSONValue] = ["displayName": "policy-test"]
        if let days { pc["endDateTime"] = .string(UTCTime.iso(w.rig.clock.now().addingTimeInterval(days * 86_400))) }
        return await w.rig.graph("POST", "/v1.0/applications/\(objectID)/addPassword", token: w.adminToken, json: .object(["passwordCredential": .object(pc)]))
    }

    /// A self-service addKey of `certificate` to `objectID`, proved with `signer`.
    func addKey(_ w: GraphWorld, _ objectID: String, token: String, _ certificate: X509Certificate, signer: SigningCredential) async throws -> EmulatorResponse {
        await w.rig.graph("POST", "/v1.0/applications/\(objectID)/addKey", token: token, json: try w.rig.addKeyBody(certificate, signer: signer, objectID: objectID))
    }

    /// The PATCH `keyCredentials` that keeps an app's keys (echoed by keyId) and adds `certificate`.
    func keysPlus(_ w: GraphWorld, appId: String, _ certificate: X509Certificate) throws -> JSONValue {
        let kept: [JSONValue] = try w.rig.emulator.keyCredentials(appId: appId).map { .object(["keyId": .string($0.keyId), "type": "AsymmetricX509Cert", "usage": "Verify"]) }
        let added: JSONValue = .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(certificate.der))])
        return .object(["keyCredentials": .array(kept + [added])])
    }

    @Test func theEffectivePolicyIsTheAssignedOneOverTheDefault() {
        let cutoff = Date(timeIntervalSince1970: 1_800_000_000)
        let now = cutoff.addingTimeInterval(10 * 86_400)
        let old = cutoff.addingTimeInterval(-1), new = cutoff
        let tenantDefault = TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(
            passwordCredentials: [.init("passwordAddition", restrictForAppsCreatedAfterDateTime: cutoff), .init("passwordLifetime", maxLifetime: "P90D")],
            keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: "P30D")]))
        func secret(days: Double) -> NewCredential { NewCredential(kind: .password, startDateTime: now, endDateTime: now.addingTimeInterval(days * 86_400)) }
        func cert(from: Double = -5, days: Double) -> NewCredential {
            NewCredential(kind: .asymmetricKey, startDateTime: now.addingTimeInterval(from * 86_400), endDateTime: now.addingTimeInterval(days * 86_400))
        }

        // the default alone: a restriction binds apps created on or after its date
        let byDefault = EffectiveAppPolicy(tenantDefault: tenantDefault, assigned: nil, inheritsDefault: true)
        #expect(byDefault.binding("passwordAddition", appCreatedAt: new)?.policyID == Self.defaultID)
        #expect(byDefault.binding("passwordAddition", appCreatedAt: old) == nil)
        #expect(byDefault.refusal(adding: [secret(days: 30)], appCreatedAt: new, now: now, lifetimeFromStart: false)?.code == "CredentialTypeNotAllowedAsPerAppPolicy")
        #expect(byDefault.refusal(adding: [secret(days: 30)], appCreatedAt: old, now: now, lifetimeFromStart: false) == nil)
        #expect(byDefault.refusal(adding: [secret(days: 91)], appCreatedAt: old, now: now, lifetimeFromStart: false)?.code == "CredentialInvalidLifetimeAsPerAppPolicy")
        #expect(byDefault.refusal(adding: [cert(days: 29)], appCreatedAt: old, now: now, lifetimeFromStart: false) == nil)
        #expect(byDefault.refusal(adding: [cert(days: 31)], appCreatedAt: old, now: now, lifetimeFromStart: false)?.code == "CredentialInvalidLifetimeAsPerAppPolicy")
        // 29 days from now, but 34 from its start
        #expect(byDefault.refusal(adding: [cert(days: 29)], appCreatedAt: old, now: now, lifetimeFromStart: true)?.code == "CredentialInvalidLifetimeAsPerAppPolicy")

        // a disabled default binds nothing; its restrictions are kept
        var disabled = tenantDefault
        disabled.isEnabled = false
        #expect(EffectiveAppPolicy(tenantDefault: disabled, assigned: nil, inheritsDefault: true).restrictions.isEmpty)

        // an assigned policy wins for the types it names (a disabled restriction lifts the default's);
        // the default keeps the others, unless inheritance is off
        let own = AppManagementPolicy(id: "own-policy", isEnabled: true, restrictions: .init(
            passwordCredentials: [.init("passwordAddition", state: "disabled")], keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: "P400D")]))
        let inherited = EffectiveAppPolicy(tenantDefault: tenantDefault, assigned: own, inheritsDefault: true)
        #expect(inherited.binding("passwordAddition", appCreatedAt: new) == nil)
        #expect(inherited.binding("passwordLifetime", appCreatedAt: new)?.policyID == Self.defaultID)
        #expect(inherited.binding("asymmetricKeyLifetime", appCreatedAt: new)?.policyID == "own-policy")
        #expect(inherited.refusal(adding: [cert(days: 365)], appCreatedAt: new, now: now, lifetimeFromStart: false) == nil)
        #expect(inherited.refusal(adding: [cert(days: 401)], appCreatedAt: new, now: now, lifetimeFromStart: false)?.message
                == "Credential lifetime exceeds the max value allowed as per assigned policy 'own-policy'.")
        let replaced = EffectiveAppPolicy(tenantDefault: tenantDefault, assigned: own, inheritsDefault: false)
        #expect(replaced.binding("passwordLifetime", appCreatedAt: new) == nil)
        #expect(Set(replaced.restrictions.keys) == ["passwordAddition", "asymmetricKeyLifetime"])
        // a disabled assigned policy leaves the default in force
        var off = own
        off.isEnabled = false
        #expect(EffectiveAppPolicy(tenantDefault: tenantDefault, assigned: off, inheritsDefault: false) == byDefault)
    }

    @Test func durationsAreODataDayTimeDurations() {
        #expect(ISODuration.seconds("P90D") == TimeInterval(90 * 86_400))
        #expect(ISODuration.seconds("P4DT12H30M5S") == 390_605)  // 4 × 86,400 + 12 × 3,600 + 30 × 60 + 5
        #expect(ISODuration.seconds("PT36H") == TimeInterval(36 * 3600))
        #expect(ISODuration.seconds("PT0.5S") == 0.5)
        for bad in ["P1Y", "P1M", "P2W", "P", "PT", "P1DT", "90D", "-P1D", "PT1H2H", "PT1M1H", "P1.5D", "P1D "] {
            #expect(ISODuration.seconds(bad) == nil, "\(bad)")
        }
    }

    @Test func theDefaultPolicyIsReadAndPatchedWithPolicyPermissionsOnly() async throws {
        let w = try await PolicyWorld()
        let cutoff = w.rig.clock.now()
        // never set: the documented default, disabled, without restrictions
        let fresh = await w.rig.graph("GET", Self.defaultPath, token: w.readerToken)
        #expect(fresh.status == 200)
        #expect(fresh.json?["@odata.context"]?.stringValue?.hasSuffix("/v1.0/$metadata#policies/defaultAppManagementPolicy/$entity") == true)
        #expect(fresh.json?["id"]?.stringValue == Self.defaultID)
        #expect(fresh.json?["isEnabled"] == .bool(false))
        #expect(fresh.json?["applicationRestrictions"] == restrictions())
        #expect(fresh.json?["servicePrincipalRestrictions"] == restrictions())

        // Application.ReadWrite.All neither reads nor writes it, a role-less app cannot read it,
        // Policy.Read.All cannot write it
        let patch: JSONValue = .object(["isEnabled": true, "applicationRestrictions": restrictions(
            passwords: [restriction("passwordAddition", after: cutoff)], keys: [restriction("asymmetricKeyLifetime", max: "P90D")])])
        for (who, token, method) in [("provisioner", w.graph.adminToken, "GET"), ("provisioner", w.graph.adminToken, "PATCH"),
                                     ("role-less app", w.graph.appToken, "GET"), ("reader", w.readerToken, "PATCH")] {
            let r = await w.rig.graph(method, Self.defaultPath, token: token, json: method == "PATCH" ? patch : nil)
            #expect(r.status == 403, "\(who) \(method)")
            #expect(r.json?["error"]?["code"]?.stringValue == "Authorization_RequestDenied", "\(who) \(method)")
        }
        #expect(try w.rig.emulator.defaultAppManagementPolicy(tenantID: w.rig.tenant.id) == TenantAppManagementPolicy(), "nothing changed")

        // Policy.ReadWrite.ApplicationConfiguration writes it, and it reads back as sent
        #expect(await w.rig.graph("PATCH", Self.defaultPath, token: w.writerToken, json: patch).status == 204)
        let read = await w.rig.graph("GET", Self.defaultPath, token: w.readerToken)
        #expect(read.json?["isEnabled"] == .bool(true))
        #expect(read.json?["applicationRestrictions"] == restrictions(passwords: [restriction("passwordAddition", after: cutoff, state: "enabled")],
                                                                      keys: [restriction("asymmetricKeyLifetime", max: "P90D", state: "enabled")]))
        #expect(read.json?["servicePrincipalRestrictions"] == restrictions(), "what a PATCH does not name keeps its value")
        let stored = try w.rig.emulator.defaultAppManagementPolicy(tenantID: w.rig.tenant.id)
        #expect(stored.applicationRestrictions == AppManagementConfiguration(
            passwordCredentials: [CredentialRestriction("passwordAddition", restrictForAppsCreatedAfterDateTime: cutoff)],
            keyCredentials: [CredentialRestriction("asymmetricKeyLifetime", maxLifetime: "P90D")]))

        // a body Graph would refuse changes nothing: a lifetime without maxLifetime, a duration in
        // years, a key restriction among the password ones, a type twice, a property the type lacks
        let bad: [JSONValue] = [
            .object(["applicationRestrictions": restrictions(passwords: [restriction("passwordLifetime")])]),
            .object(["applicationRestrictions": restrictions(passwords: [restriction("passwordLifetime", max: "P1Y")])]),
            .object(["applicationRestrictions": restrictions(passwords: [restriction("asymmetricKeyLifetime", max: "P1D")])]),
            .object(["applicationRestrictions": restrictions(passwords: [restriction("passwordAddition"), restriction("passwordAddition")])]),
            .object(["isEnabled": "yes"]),
            .object(["isEnabled": false, "colour": "red"]),
        ]
        for body in bad {
            let r = await w.rig.graph("PATCH", Self.defaultPath, token: w.writerToken, json: body)
            #expect(r.status == 400, "\(body)")
        }
        #expect(try w.rig.emulator.defaultAppManagementPolicy(tenantID: w.rig.tenant.id) == stored)
    }

    @Test func passwordAdditionBindsOnlyAppsCreatedOnOrAfterItsDate() async throws {
        let w = try await GraphWorld()
        let old = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "old-app")
        w.rig.clock.advance(by: 60)
        let cutoff = w.rig.clock.now()
        let new = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "new-app")
        try w.rig.emulator.setDefaultAppManagementPolicy(TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(passwordCredentials: [
            .init("passwordAddition", restrictForAppsCreatedAfterDateTime: cutoff), .init("passwordLifetime", maxLifetime: "P90D"),
        ])), tenantID: w.rig.tenant.id)

        // the app created at the cutoff may not have a secret at all
        expectRefusal(await addPassword(w, new.objectID, days: 30), "CredentialTypeNotAllowedAsPerAppPolicy", policy: Self.defaultID)
        #expect(try w.rig.emulator.store.application(id: new.objectID)?.passwordCredentials.isEmpty == true)
        // the older one may, within the lifetime: not Graph's default of two years, not 91 days; 30 days
        expectRefusal(await addPassword(w, old.objectID), "CredentialInvalidLifetimeAsPerAppPolicy", policy: Self.defaultID)
        expectRefusal(await addPassword(w, old.objectID, days: 91), "CredentialInvalidLifetimeAsPerAppPolicy", policy: Self.defaultID)
        #expect(try w.rig.emulator.store.application(id: old.objectID)?.passwordCredentials.isEmpty == true)
        #expect(await addPassword(w, old.objectID, days: 30).status == 200)
        #expect(try w.rig.emulator.store.application(id: old.objectID)?.passwordCredentials.count == 1)
    }

    @Test func aCertificateOutlivingAsymmetricKeyLifetimeIsRefusedByAddKeyAndPatch() async throws {
        let w = try await GraphWorld()
        // an app that holds a year-long certificate from before the policy
        let legacyCred = try w.rig.credential("legacy", days: 365)
        let legacy = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "legacy", certificates: [legacyCred.certificate])
        try w.rig.emulator.setDefaultAppManagementPolicy(TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(keyCredentials: [
            .init("asymmetricKeyLifetime", maxLifetime: "P90D"),
        ])), tenantID: w.rig.tenant.id)
        func keys() throws -> [StoredKeyCredential] { try w.rig.emulator.keyCredentials(appId: w.app.appId) }

        // addKey with a valid proof: a certificate ending in 91 days is refused, one ending in 89 added
        let long = try w.rig.credential("long", days: 91)
        expectRefusal(try await addKey(w, w.app.objectID, token: w.appToken, long.certificate, signer: w.boot), "CredentialInvalidLifetimeAsPerAppPolicy",
                      policy: Self.defaultID)
        #expect(try keys().count == 1)
        let short = try w.rig.credential("short", days: 89)
        #expect(try await addKey(w, w.app.objectID, token: w.appToken, short.certificate, signer: w.boot).status == 200)
        #expect(try keys().count == 2)

        // PATCH keyCredentials: the same rule for the certificate it adds
        let longer = try w.rig.credential("longer", days: 120)
        expectRefusal(await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: try keysPlus(w, appId: w.app.appId, longer.certificate)),
                      "CredentialInvalidLifetimeAsPerAppPolicy", policy: Self.defaultID)
        #expect(try keys().count == 2)
        let shorter = try w.rig.credential("shorter", days: 60)
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken,
                                  json: try keysPlus(w, appId: w.app.appId, shorter.certificate)).status == 204)
        #expect(try keys().count == 3)

        // the credentials a PATCH keeps are not judged again: the legacy app keeps its year-long one
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(legacy.objectID)", token: w.adminToken,
                                  json: try keysPlus(w, appId: legacy.appId, shorter.certificate)).status == 204)
        #expect(try w.rig.emulator.keyCredentials(appId: legacy.appId).count == 2)
        // and a new application cannot be created with a certificate the policy forbids
        let born = await w.rig.graph("POST", "/v1.0/applications", token: w.adminToken, json: .object([
            "displayName": "born-long", "keyCredentials": .array([.object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(longer.certificate.der))])]),
        ]))
        expectRefusal(born, "CredentialInvalidLifetimeAsPerAppPolicy", policy: Self.defaultID)
        #expect(try w.rig.emulator.applications(tenantID: w.rig.tenant.id).allSatisfy { $0.displayName != "born-long" })
    }

    @Test func anAssignedPolicyOverridesTheDefaultForTheRestrictionsItNames() async throws {
        let w = try await PolicyWorld()
        let g = w.graph
        try g.rig.emulator.setDefaultAppManagementPolicy(TenantAppManagementPolicy(isEnabled: true, applicationRestrictions: .init(
            passwordCredentials: [.init("passwordAddition")], keyCredentials: [.init("asymmetricKeyLifetime", maxLifetime: "P30D")])), tenantID: g.rig.tenant.id)
        // a second app, which keeps the default
        let otherCred = try g.rig.credential("other", days: 2)
        let other = try g.rig.emulator.register(tenantID: g.rig.tenant.id, displayName: "other", certificates: [otherCred.certificate])
        let otherToken = try await g.rig.token(clientID: other.appId, credential: otherCred)

        // a policy allowing year-long certificates, made by the policy administrator (not by the provisioner)
        let policy: JSONValue = .object(["displayName": "year-long certificates", "description": "KeyRoll-managed apps", "isEnabled": true,
                                         "restrictions": restrictions(keys: [restriction("asymmetricKeyLifetime", max: "P400D")])])
        #expect(await g.rig.graph("POST", "/v1.0/policies/appManagementPolicies", token: g.adminToken, json: policy).status == 403)
        let created = await g.rig.graph("POST", "/v1.0/policies/appManagementPolicies", token: w.writerToken, json: policy)
        #expect(created.status == 201)
        let policyID = try #require(created.json?["id"]?.stringValue)
        #expect(created.header("Location")?.hasSuffix("/v1.0/policies/appManagementPolicies/\(policyID)") == true)
        #expect(created.json?["restrictions"]?["keyCredentials"] == .array([restriction("asymmetricKeyLifetime", max: "P400D", state: "enabled")]))

        // assigned to app-1 as Graph documents it (POST /applications/{id}/appManagementPolicies/$ref)
        let ref: JSONValue = .object(["@odata.id": .string("https://graph.microsoft.com/v1.0/policies/appManagementPolicies/\(policyID)")])
        let assignPath = "/v1.0/applications/\(g.app.objectID)/appManagementPolicies/$ref"
        #expect(await g.rig.graph("POST", assignPath, token: g.adminToken, json: ref).status == 403, "assigning needs Policy.ReadWrite.ApplicationConfiguration")
        #expect(await g.rig.graph("POST", assignPath, token: w.writerToken, json: ref).status == 204)
        let listed = await g.rig.graph("GET", "/v1.0/applications/\(g.app.objectID)/appManagementPolicies", token: w.writerToken)
        #expect(listed.status == 200)
        #expect(listed.json?["value"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [policyID])

        // a year-long certificate: allowed to app-1 by its policy, refused to the other app by the default
        let year = try g.rig.credential("year", days: 365)
        #expect(try await addKey(g, g.app.objectID, token: g.appToken, year.certificate, signer: g.boot).status == 200)
        expectRefusal(try await addKey(g, other.objectID, token: otherToken, year.certificate, signer: otherCred), "CredentialInvalidLifetimeAsPerAppPolicy",
                      policy: Self.defaultID)
        // beyond its own policy's limit, app-1 is refused in that policy's name
        let tooLong = try g.rig.credential("too-long", days: 401)
        expectRefusal(try await addKey(g, g.app.objectID, token: g.appToken, tooLong.certificate, signer: g.boot), "CredentialInvalidLifetimeAsPerAppPolicy",
                      policy: policyID)

        // the restriction the policy does not name stays the default's, unless the setting says an
        // assigned policy replaces the default entirely
        expectRefusal(await addPassword(g, g.app.objectID, days: 30), "CredentialTypeNotAllowedAsPerAppPolicy", policy: Self.defaultID)
        g.rig.emulator.settings.appPolicyInheritsDefault = false
        #expect(await addPassword(g, g.app.objectID, days: 30).status == 200)
        expectRefusal(await addPassword(g, other.objectID, days: 30), "CredentialTypeNotAllowedAsPerAppPolicy", policy: Self.defaultID)

        // the policy side of the assignment, its appliesTo, and one policy per application
        let appliesTo = "/v1.0/policies/appManagementPolicies/\(policyID)/appliesTo"
        let otherRef: JSONValue = .object(["@odata.id": .string("https://graph.microsoft.com/v1.0/applications/\(other.objectID)")])
        #expect(await g.rig.graph("POST", appliesTo + "/$ref", token: w.writerToken, json: otherRef).status == 204)
        let applies = await g.rig.graph("GET", appliesTo, token: w.writerToken)
        #expect(Set(applies.json?["value"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []) == [g.app.objectID, other.objectID])
        #expect(await g.rig.graph("POST", appliesTo + "/$ref", token: w.writerToken, json: otherRef).status == 400)
        #expect(try g.rig.emulator.assignedAppManagementPolicy(appId: other.appId)?.id == policyID)
        #expect(try await addKey(g, other.objectID, token: otherToken, year.certificate, signer: otherCred).status == 200)
    }

    @Test func disablingTheDefaultPolicyLiftsItsRestrictions() async throws {
        let w = try await PolicyWorld()
        let enable: JSONValue = .object(["isEnabled": true, "applicationRestrictions": restrictions(passwords: [restriction("passwordAddition")])])
        #expect(await w.rig.graph("PATCH", Self.defaultPath, token: w.writerToken, json: enable).status == 204)
        expectRefusal(await addPassword(w.graph, w.graph.app.objectID, days: 30), "CredentialTypeNotAllowedAsPerAppPolicy", policy: Self.defaultID)

        #expect(await w.rig.graph("PATCH", Self.defaultPath, token: w.writerToken, json: .object(["isEnabled": false])).status == 204)
        #expect(await addPassword(w.graph, w.graph.app.objectID, days: 30).status == 200)
        let read = await w.rig.graph("GET", Self.defaultPath, token: w.readerToken)
        #expect(read.json?["isEnabled"] == .bool(false))
        #expect(read.json?["applicationRestrictions"]?["passwordCredentials"]?.arrayValue?.count == 1, "kept, not enforced")
    }

    @Test func policiesAreListedUpdatedUnassignedAndDeleted() async throws {
        let w = try await PolicyWorld()
        let g = w.graph
        let created = await g.rig.graph("POST", "/v1.0/policies/appManagementPolicies", token: w.writerToken, json: .object([
            "displayName": "short secrets", "description": "d", "isEnabled": true,
            "restrictions": restrictions(passwords: [restriction("passwordLifetime", max: "P7D")]),
        ]))
        let policyID = try #require(created.json?["id"]?.stringValue)
        let path = "/v1.0/policies/appManagementPolicies/\(policyID)"
        #expect(await g.rig.graph("POST", "/v1.0/policies/appManagementPolicies", token: w.writerToken,
                                  json: .object(["displayName": "no description"])).status == 400)

        // Policy.Read.All lists and reads; only Policy.ReadWrite.ApplicationConfiguration changes
        let list = await g.rig.graph("GET", "/v1.0/policies/appManagementPolicies", token: w.readerToken)
        #expect(list.json?["value"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [policyID])
        #expect(await g.rig.graph("PATCH", path, token: w.readerToken, json: .object(["displayName": "x"])).status == 403)
        #expect(await g.rig.graph("PATCH", path, token: w.writerToken, json: .object(["displayName": "weekly secrets"])).status == 204)
        let one = await g.rig.graph("GET", path, token: w.readerToken)
        #expect(one.json?["displayName"]?.stringValue == "weekly secrets")
        #expect(one.json?["restrictions"]?["passwordCredentials"]?.arrayValue?.count == 1, "a PATCH of the name keeps the restrictions")

        // assigned, it binds; unassigned, it no longer does
        let ref: JSONValue = .object(["@odata.id": .string("https://graph.microsoft.com/v1.0/policies/appManagementPolicies/\(policyID)")])
        #expect(await g.rig.graph("POST", "/v1.0/applications/\(g.app.objectID)/appManagementPolicies/$ref", token: w.writerToken, json: ref).status == 204)
        expectRefusal(await addPassword(g, g.app.objectID, days: 8), "CredentialInvalidLifetimeAsPerAppPolicy", policy: policyID)
        #expect(await g.rig.graph("DELETE", "/v1.0/applications/\(g.app.objectID)/appManagementPolicies/\(policyID)/$ref", token: w.writerToken).status == 204)
        #expect(await addPassword(g, g.app.objectID, days: 8).status == 200)

        // deleted, it is gone, and so is its assignment
        #expect(await g.rig.graph("POST", "/v1.0/applications/\(g.app.objectID)/appManagementPolicies/$ref", token: w.writerToken, json: ref).status == 204)
        #expect(await g.rig.graph("DELETE", path, token: w.writerToken).status == 204)
        let gone = await g.rig.graph("GET", path, token: w.readerToken)
        #expect(gone.status == 404)
        #expect(gone.json?["error"]?["code"]?.stringValue == "Request_ResourceNotFound")
        #expect(try g.rig.emulator.assignedAppManagementPolicy(appId: g.app.appId) == nil)
        #expect(await addPassword(g, g.app.objectID, days: 8).status == 200)
    }
}
