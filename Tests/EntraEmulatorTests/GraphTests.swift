import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import Testing
import TestSupport

@Suite struct GraphTests {
    func world(_ settings: EmulatorSettings = .init()) async throws -> GraphWorld { try await GraphWorld(settings) }

    func errorCode(_ r: EmulatorResponse) -> String? { r.json?["error"]?["code"]?.stringValue }

    @Test func selfServiceRollWithoutAnyPermission() async throws {
        let w = try await world()
        let next = try w.rig.credential("next", days: 365)
        let add = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: w.appToken,
                                    json: try w.rig.addKeyBody(next.certificate, signer: w.boot, objectID: w.app.objectID))
        #expect(add.status == 200)
        let kc = try #require(add.json)
        #expect(kc["@odata.context"]?.stringValue?.hasSuffix("$metadata#microsoft.graph.keyCredential") == true)
        #expect(kc["key"] == .null)
        #expect(kc["customKeyIdentifier"]?.stringValue == next.certificate.sha1Thumbprint.base64)
        #expect(kc["type"] == "AsymmetricX509Cert")
        #expect(kc["usage"] == "Verify")
        #expect(kc["displayName"] == "CN=next")
        #expect(kc["endDateTime"]?.stringValue == ISO8601DateFormatter().string(from: next.certificate.notAfter))
        let newKeyId = try #require(kc["keyId"]?.stringValue)
        // remove the bootstrap key with a proof signed by the NEW key
        let bootKeyId = try #require(try w.rig.emulator.keyCredentials(appId: w.app.appId).first { $0.sha1 == w.boot.certificate.sha1Thumbprint }?.keyId)
        let remove = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/removeKey", token: w.appToken, json: .object([
            "keyId": .string(bootKeyId), "proof": .string(try ProofOfPossession.make(objectID: w.app.objectID, credential: next, now: w.rig.clock.now())),
        ]))
        #expect(remove.status == 204)
        #expect(remove.body.isEmpty)
        #expect(try w.rig.emulator.keyCredentials(appId: w.app.appId).map(\.keyId) == [newKeyId])
        // the namespace-qualified spelling and the appId alternate key work too
        let third = try w.rig.credential("third", days: 365)
        let alt = await w.rig.graph("POST", "/v1.0/applications(appId='\(w.app.appId)')/microsoft.graph.addKey", token: w.appToken,
                                    json: try w.rig.addKeyBody(third.certificate, signer: next, objectID: w.app.objectID))
        #expect(alt.status == 200)
    }

    @Test func everyBadProofIs401AuthenticationMissingOrMalformed() async throws {
        let w = try await world()
        let next = try w.rig.credential("next", days: 365)
        let stranger = try w.rig.credential("stranger")
        let now = w.rig.clock.now()
        let thumb = w.boot.certificate.sha1Thumbprint
        func sign(_ claims: [String: JSONValue], header: [String: JSONValue]? = nil, key: SigningCredential? = nil, alg: JWSAlgorithm = .rs256) throws -> String {
            try CompactJWS.sign(header: header ?? ["typ": "JWT", "x5t": .string(thumb.base64URL), "kid": .string(thumb.hex)], claims: claims,
                                algorithm: alg, key: (key ?? w.boot).signer)
        }
        let good: [String: JSONValue] = ["aud": .string(ProofOfPossession.audience), "iss": .string(w.app.objectID),
                                         "nbf": NumericDate.value(now), "exp": NumericDate.value(now.addingTimeInterval(600))]
        var graphAud = good; graphAud["aud"] = "00000003-0000-0000-c000-000000000000"
        var appIdIss = good; appIdIss["iss"] = .string(w.app.appId)
        var expired = good; expired["nbf"] = NumericDate.value(now.addingTimeInterval(-7200)); expired["exp"] = NumericDate.value(now.addingTimeInterval(-6600))
        let validPadded: String = {
            let t = try! sign(good)
            var parts = t.split(separator: ".").map(String.init)
            parts[1] = Data(Base64URL.decodeStrict(parts[1])!).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            return parts.joined(separator: ".")  // payload now carries '=' padding
        }()
        let proofs: [(String, JSONValue)] = [
            ("missing", .null),
            ("graph aud 00000003", .string(try sign(graphAud))),
            ("appId instead of object id", .string(try sign(appIdIss))),
            ("expired", .string(try sign(expired))),
            ("unregistered signer", .string(try sign(good, header: ["typ": "JWT"], key: stranger))),
            ("PS256", .string(try sign(good, alg: .ps256))),
            ("padded", .string(validPadded)),
            ("garbage", "abc.def.ghi"),
        ]
        for (name, proof) in proofs {
            let r = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: w.appToken, json: .object([
                "keyCredential": .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(next.certificate.der))]),
                "proof": proof,
            ]))
            #expect(r.status == 401, "\(name)")
            #expect(errorCode(r) == "Authentication_MissingOrMalformed", "\(name)")
            #expect(r.json?["error"]?["message"] == "Access Token missing or malformed.", "\(name)")
        }
        #expect(try w.rig.emulator.keyCredentials(appId: w.app.appId).count == 1, "nothing was added")
    }

    @Test func noValidCertificateMeansSelfServiceIsImpossible() async throws {
        let w = try await world()
        let next = try w.rig.credential("next", days: 365)
        // 10 minutes before the bootstrap cert expires the app still gets a bearer (valid 1 hour) …
        w.rig.clock.set(w.boot.certificate.notAfter.addingTimeInterval(-600))
        let bearer = try await w.rig.token(clientID: w.app.appId, credential: w.boot)
        // … 20 minutes later the cert has expired; the bearer has not. addKey with a proof by the
        // expired cert is refused: there is no valid certificate left to prove possession with.
        w.rig.clock.advance(by: 1200)
        let r = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: bearer,
                                  json: try w.rig.addKeyBody(next.certificate, signer: w.boot, objectID: w.app.objectID))
        #expect(r.status == 401)
        #expect(errorCode(r) == "Authentication_MissingOrMalformed")
        // and no new bearer can be had with it
        let a = try ClientAssertion.make(clientID: w.app.appId, tokenEndpoint: w.rig.tokenEndpoint, credential: w.boot, now: w.rig.clock.now())
        #expect(await w.rig.tokenResponse(clientID: w.app.appId, assertion: a).status == 401)
        // only a privileged PATCH recovers it
        let adminCred = try w.rig.credential("admin2", days: 30)
        let admin = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "rescuer", roles: [.applicationReadWriteAll], certificates: [adminCred.certificate])
        let adminToken = try await w.rig.token(clientID: admin.appId, credential: adminCred)
        let patch = await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: adminToken, json: ["keyCredentials": [
            .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(next.certificate.der))]),
        ]])
        #expect(patch.status == 204)
        _ = try await w.rig.token(clientID: w.app.appId, credential: next)
    }

    @Test func authorizationRules() async throws {
        let w = try await world()
        let otherCred = try w.rig.credential("other")
        let other = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "other", certificates: [otherCred.certificate])
        let otherToken = try await w.rig.token(clientID: other.appId, credential: otherCred)
        let next = try w.rig.credential("next", days: 365)
        // another role-less app cannot roll app-1's keys, even with a valid proof
        let r = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: otherToken,
                                  json: try w.rig.addKeyBody(next.certificate, signer: w.boot, objectID: w.app.objectID))
        #expect(r.status == 403)
        #expect(errorCode(r) == "Authorization_RequestDenied")
        // a role-less app cannot PATCH itself (no self-service exemption for PATCH)
        let p = await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.appToken, json: ["displayName": "x"])
        #expect(p.status == 403)
        // nor create applications, nor list the tenant
        #expect(await w.rig.graph("POST", "/v1.0/applications", token: w.appToken, json: ["displayName": "x"]).status == 403)
        // service principal addKey needs a role even for its own SP
        let sp = await w.rig.graph("POST", "/v1.0/servicePrincipals/\(w.app.servicePrincipalID)/addKey", token: w.appToken,
                                   json: try w.rig.addKeyBody(next.certificate, signer: w.boot, objectID: w.app.servicePrincipalID))
        #expect(sp.status == 403)
        // bearer problems: missing, garbage, wrong audience
        let none = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: nil)
        #expect(none.status == 401)
        #expect(errorCode(none) == "InvalidAuthenticationToken")
        #expect(none.header("WWW-Authenticate")?.contains("00000003-0000-0000-c000-000000000000") == true)
        #expect(await w.rig.graph("GET", "/v1.0/applications", token: "abc").status == 401)
        let armAssertion = try ClientAssertion.make(clientID: w.app.appId, tokenEndpoint: w.rig.tokenEndpoint, credential: w.boot, now: w.rig.clock.now())
        let arm = await w.rig.tokenResponse(clientID: w.app.appId, assertion: armAssertion, scope: "https://management.core.windows.net//.default")
        let armToken = try #require(arm.json?["access_token"]?.stringValue)
        #expect(await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: armToken).status == 401)
    }

    @Test func graphErrorEnvelopeIsExact() async throws {
        let w = try await world()
        let r = await w.rig.request("GET", "/v1.0/applications/\(UUID().uuidString.lowercased())",
                                    headers: ["authorization": "Bearer \(w.adminToken)", "client-request-id": "abc-123"])
        #expect(r.status == 404)
        let e = try #require(r.json?["error"])
        #expect(e["code"] == "Request_ResourceNotFound")
        #expect(e["message"]?.stringValue?.hasPrefix("Resource '") == true)
        let date = try #require(e["innerError"]?["date"]?.stringValue)
        #expect(date.count == 19 && !date.hasSuffix("Z"), "innerError.date has no offset: \(date)")
        #expect(e["innerError"]?["client-request-id"] == "abc-123")
        #expect(e["innerError"]?["request-id"]?.stringValue != nil)
        #expect(r.header("client-request-id") == "abc-123")
        #expect(r.header("Content-Type")?.hasPrefix("application/json") == true)
    }

    @Test func crudListFilterSelectAndPaging() async throws {
        let w = try await world()
        var ids: [String] = []
        for i in 0..<25 {
            let r = await w.rig.graph("POST", "/v1.0/applications", token: w.adminToken,
                                      json: ["displayName": .string("svc-\(i)"), "tags": ["keyroll:managed", .string("n\(i)")]])
            #expect(r.status == 201)
            #expect(r.json?["@odata.context"]?.stringValue?.hasSuffix("$metadata#applications/$entity") == true)
            #expect(r.json?["signInAudience"] == "AzureADMyOrg")
            ids.append(r.json!["id"]!.stringValue!)
        }
        // paging through @odata.nextLink with $top
        var seen: [String] = []
        var next: String? = "/v1.0/applications?$filter=startswith(displayName,'svc-')&$top=10&$select=id,displayName"
        while let n = next {
            let r = await w.rig.graph("GET", n.replacingOccurrences(of: w.rig.base, with: ""), token: w.adminToken)
            #expect(r.status == 200)
            let page = try #require(r.json?["value"]?.arrayValue)
            #expect(page.count <= 10)
            for a in page { #expect(a["keyCredentials"] == nil, "$select trims"); seen.append(a["id"]!.stringValue!) }
            next = r.json?["@odata.nextLink"]?.stringValue
        }
        #expect(seen == ids)
        // filters
        let one = await w.rig.graph("GET", "/v1.0/applications?$filter=tags/any(t:t%20eq%20'n7')&$count=true", token: w.adminToken)
        #expect(one.json?["value"]?.arrayValue?.count == 1)
        #expect(one.json?["@odata.count"] == .int(1))
        let byName = await w.rig.graph("GET", "/v1.0/applications?$filter=displayName+eq+'svc-3'", token: w.adminToken)
        #expect(byName.json?["value"]?.arrayValue?.first?["id"]?.stringValue == ids[3])
        let bad = await w.rig.graph("GET", "/v1.0/applications?$filter=foo gt 3", token: w.adminToken)
        #expect(bad.status == 400)
        #expect(await w.rig.graph("GET", "/v1.0/applications?$top=1000", token: w.adminToken).status == 400)
        // get by appId alternate key, PATCH, DELETE
        let created = await w.rig.graph("GET", "/v1.0/applications/\(ids[0])", token: w.adminToken)
        let appId = try #require(created.json?["appId"]?.stringValue)
        #expect(await w.rig.graph("GET", "/v1.0/applications(appId='\(appId)')", token: w.adminToken).json?["id"]?.stringValue == ids[0])
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(ids[0])", token: w.adminToken, json: ["displayName": "renamed", "notes": "hi"]).status == 204)
        let renamed = await w.rig.graph("GET", "/v1.0/applications/\(ids[0])", token: w.adminToken)
        #expect(renamed.json?["displayName"] == "renamed")
        #expect(renamed.json?["notes"] == "hi")
        #expect(await w.rig.graph("DELETE", "/v1.0/applications/\(ids[0])", token: w.adminToken).status == 204)
        #expect(await w.rig.graph("GET", "/v1.0/applications/\(ids[0])", token: w.adminToken).status == 404)
        // service principals
        let sp = await w.rig.graph("POST", "/v1.0/servicePrincipals", token: w.adminToken, json: ["appId": .string(try #require(renamed.json?["appId"]?.stringValue == nil ? nil : appId))])
        #expect(sp.status == 400, "the app was deleted")
        let app2 = await w.rig.graph("GET", "/v1.0/applications/\(ids[1])", token: w.adminToken)
        let sp2 = await w.rig.graph("POST", "/v1.0/servicePrincipals", token: w.adminToken, json: ["appId": app2.json!["appId"]!])
        #expect(sp2.status == 201)
        #expect(await w.rig.graph("POST", "/v1.0/servicePrincipals", token: w.adminToken, json: ["appId": app2.json!["appId"]!]).status == 409)
        let spList = await w.rig.graph("GET", "/v1.0/servicePrincipals?$filter=appId eq '\(app2.json!["appId"]!.stringValue!)'", token: w.adminToken)
        #expect(spList.json?["value"]?.arrayValue?.count == 1)
    }

    @Test func keyOnlyOnSingleObjectSelect() async throws {
        let w = try await world()
        let plain = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        #expect(plain.json?["keyCredentials"]?.arrayValue?.first?["key"] == .null)
        let sel = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)?$select=id,keyCredentials", token: w.adminToken)
        let key = try #require(sel.json?["keyCredentials"]?.arrayValue?.first?["key"]?.stringValue)
        #expect(Base64.decode(key) == w.boot.certificate.der)
        #expect(sel.json?["@odata.context"]?.stringValue?.hasSuffix("$metadata#applications(id,keyCredentials)/$entity") == true)
        let list = await w.rig.graph("GET", "/v1.0/applications?$select=id,keyCredentials", token: w.adminToken)
        #expect(list.json?["value"]?.arrayValue?.allSatisfy { ($0["keyCredentials"]?.arrayValue ?? []).allSatisfy { $0["key"] == .null } } == true)
    }

    /// The Azure CLI's `credential reset --append`: PATCH echoing existing entries with key:null.
    @Test func patchReplacesTheCollectionAndKeepsEchoedEntries() async throws {
        let w = try await world()
        let current = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        var entries = try #require(current.json?["keyCredentials"]?.arrayValue)
        let added = try w.rig.credential("cli", days: 300)
        let pemBody = added.certificate.pem.split(separator: "\n").dropFirst().dropLast().joined(separator: "\n")  // with \n line breaks
        entries.append(.object(["@odata.type": "#microsoft.graph.keyCredential", "displayName": .null, "key": .string(pemBody),
                                "keyId": .string(UUID().uuidString.lowercased()), "type": "AsymmetricX509Cert", "usage": "Verify",
                                "endDateTime": .string(ISO8601DateFormatter().string(from: added.certificate.notAfter)),
                                "startDateTime": .string(ISO8601DateFormatter().string(from: added.certificate.notBefore))]))
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: ["keyCredentials": .array(entries)]).status == 204)
        let creds = try w.rig.emulator.keyCredentials(appId: w.app.appId)
        #expect(creds.count == 2)
        #expect(creds[0].key == w.boot.certificate.der, "the echoed entry kept its certificate")
        #expect(creds[1].key == added.certificate.der)
        // the bootstrap cert still signs in after the PATCH
        _ = try await w.rig.token(clientID: w.app.appId, credential: w.boot)
        // an end date beyond the certificate is refused
        var tooLong = entries[1].objectValue!
        tooLong["keyId"] = .string(UUID().uuidString.lowercased())
        tooLong["endDateTime"] = .string(ISO8601DateFormatter().string(from: added.certificate.notAfter.addingTimeInterval(86_400)))
        let bad = await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: ["keyCredentials": .array([.object(tooLong)])])
        #expect(bad.status == 400)
        #expect(bad.json?["error"]?["message"] == "Key credential end date is invalid.")
        #expect(try w.rig.emulator.keyCredentials(appId: w.app.appId).count == 2, "a refused PATCH changes nothing")
        // PATCH with only the new entry drops the others (what locks real users out)
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: ["keyCredentials": .array([entries[1]])]).status == 204)
        #expect(try w.rig.emulator.keyCredentials(appId: w.app.appId).map(\.key) == [added.certificate.der])
    }

    @Test func sizeLimitGivesDirectoryResourceSizeExceeded() async throws {
        var s = EmulatorSettings()
        s.maxCredentialItems = 2
        let w = try await world(s)
        let k2 = try w.rig.credential("k2")
        #expect(await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: w.appToken,
                                  json: try w.rig.addKeyBody(k2.certificate, signer: w.boot, objectID: w.app.objectID)).status == 200)
        let k3 = try w.rig.credential("k3")
        let r = await w.rig.graph("POST", "/v1.0/applications/\(w.app.objectID)/addKey", token: w.appToken,
                                  json: try w.rig.addKeyBody(k3.certificate, signer: w.boot, objectID: w.app.objectID))
        #expect(errorCode(r) == "Directory_ResourceSizeExceeded")
    }

    @Test func throttlingAnswers429WithRetryAfterAndScope() async throws {
        var s = EmulatorSettings()
        s.throttling.enabled = true
        s.throttling.writesPerWindow = 3
        let w = try await world(s)
        var statuses: [Int] = []
        var last: EmulatorResponse?
        for i in 0..<5 {
            let r = await w.rig.graph("POST", "/v1.0/applications", token: w.adminToken, json: ["displayName": .string("t\(i)")])
            statuses.append(r.status)
            last = r
        }
        #expect(statuses == [201, 201, 201, 429, 429] as [Int])
        let r = try #require(last)
        #expect(errorCode(r) == "TooManyRequests")
        let retry = try #require(r.header("Retry-After").flatMap(Double.init))
        #expect(retry > 0 && retry <= 150)
        #expect(r.header("x-ms-throttle-scope") == "Tenant_Application/Write/\(w.admin.appId)/\(w.rig.tenant.id)")
        #expect(r.header("x-ms-throttle-information") == "WriteLimitExceeded")
        w.rig.clock.advance(by: retry)
        // the admin's bearer is still valid within the hour
        #expect(await w.rig.graph("POST", "/v1.0/applications", token: w.adminToken, json: ["displayName": "after"]).status == 201)
    }

    @Test func injectedFaults() async throws {
        let w = try await world()
        w.rig.emulator.setFaults([FaultRule(route: "GET /v1.0/applications", action: .status(503, retryAfter: 1.5), sequence: [true, false, true])])
        let a = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        let b = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        let c = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        let d = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken)
        #expect([a.status, b.status, c.status, d.status] as [Int] == [503, 200, 503, 200] as [Int])
        #expect(a.header("Retry-After") == "1.500")
        w.rig.emulator.setFaults([FaultRule(route: "token", action: .drop)])
        let dropped = await w.rig.tokenResponse(clientID: w.app.appId, secret: "x")
        #expect(dropped.dropConnection)
        w.rig.emulator.setFaults([])
    }
}
