import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// An app ("payroll-export") with two certificates and a secret, and an auditor app holding
/// AuditLog.Read.All: the starting point of the sign-in log and report tests.
struct SignInWorld {
    let rig: EmulatorRig
    let certA: SigningCredential
    let certB: SigningCredential
    let secret = "payroll-secret-0123456789abcdefghijklmnop"
    let app: EntraEmulator.Registration
    let readerCred: SigningCredential
    let reader: EntraEmulator.Registration
    static let servicePrincipals = "signInEventTypes/any(t: t eq 'servicePrincipal')"

    init(_ settings: EmulatorSettings = .init(), extraCertificates: [X509Certificate] = []) throws {
        rig = try EmulatorRig(settings: settings)
        certA = try rig.credential("cert-a", days: 400)
        certB = try rig.credential("cert-b", days: 400)
        app = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "payroll-export",
                                        certificates: [certA.certificate, certB.certificate] + extraCertificates, secret: secret)
        readerCred = try rig.credential("reader", days: 400)
        reader = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "keyroll-auditor", roles: [.auditLogReadAll], certificates: [readerCred.certificate])
    }

    /// A fresh token of the auditor (tests move the clock past an hour-long token).
    func readerToken() async throws -> String { try await rig.token(clientID: reader.appId, credential: readerCred) }

    func signIn(_ cred: SigningCredential, scope: String = "https://graph.microsoft.com/.default") async throws {
        let a = try ClientAssertion.make(clientID: app.appId, tokenEndpoint: rig.tokenEndpoint, credential: cred, now: rig.clock.now())
        let r = await rig.tokenResponse(clientID: app.appId, assertion: a, scope: scope)
        guard r.status == 200 else { throw LabError("sign-in refused: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
    }

    func signInWithSecret(_ s: String? = nil) async -> EmulatorResponse {
        await rig.tokenResponse(clientID: app.appId, secret: s ?? secret)
    }

    func keyId(_ cred: SigningCredential) throws -> String {
        try #require(try rig.emulator.keyCredentials(appId: app.appId).first { $0.sha1 == cred.certificate.sha1Thumbprint }).keyId
    }

    func secretKeyId() throws -> String {
        try #require(try rig.emulator.store.application(appId: app.appId)?.passwordCredentials.first).keyId
    }

    func get(_ path: String, _ query: [(String, String)] = [], token: String) async -> EmulatorResponse {
        await rig.graph("GET", query.isEmpty ? path : path + "?" + FormEncoding.encode(query), token: token)
    }

    /// The app's service-principal sign-ins as the log serves them now.
    func log(_ extra: [(String, String)] = [], filter: String? = nil, token: String) async throws -> [JSONValue] {
        try await entries([("$filter", filter ?? "\(Self.servicePrincipals) and appId eq '\(app.appId)'")] + extra, token: token)
    }

    /// The sign-in log's entries for `query` as served now (without a `$filter`, Graph lists
    /// interactive user sign-ins).
    func entries(_ query: [(String, String)] = [], token: String) async throws -> [JSONValue] {
        let r = await get("/beta/auditLogs/signIns", query, token: token)
        guard r.status == 200 else { throw LabError("sign-in log: \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return r.json?["value"]?.arrayValue ?? []
    }

    /// The ids of the entries `filter` lists (nil: no `$filter`).
    func ids(_ filter: String?, token: String) async throws -> [String] {
        try await entries(filter.map { [("$filter", $0)] } ?? [], token: token).compactMap { $0["id"]?.stringValue }
    }

    /// A delegated sign-in of `user` to the app (or `appId`), now or `at`.
    @discardableResult
    func delegated(_ user: String, appId: String? = nil, interactive: Bool = true, credentialKeyId: String? = nil,
                   resource: String? = "https://graph.microsoft.com", at: Date? = nil) throws -> SignInEvent {
        try rig.emulator.recordDelegatedSignIn(appId: appId ?? app.appId, userPrincipalName: user, interactive: interactive,
                                               credentialKeyId: credentialKeyId, resource: resource, at: at)
    }

    /// The service-principal report's row for `appId`.
    func servicePrincipalActivity(_ appId: String, token: String) async -> JSONValue? {
        await get("/beta/reports/servicePrincipalSignInActivities", [("$filter", "appId eq '\(appId)'")], token: token).json?["value"]?.arrayValue?.first
    }
}

@Suite struct SignInLogTests {
    func iso(_ d: Date) -> JSONValue { .string(UTCTime.iso(d)) }

    /// Graph's error envelope, exactly: code, message and innerError {date, request-id, client-request-id}.
    func expectGraphError(_ r: EmulatorResponse, _ status: Int, _ code: String, _ message: String, _ what: String = "",
                          sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == status, "\(what)", sourceLocation: sourceLocation)
        let e = r.json?["error"]
        #expect(e?.objectValue?.keys.sorted() == ["code", "innerError", "message"], "\(what)", sourceLocation: sourceLocation)
        #expect(e?["code"]?.stringValue == code, "\(what)", sourceLocation: sourceLocation)
        #expect(e?["message"]?.stringValue == message, "\(what)", sourceLocation: sourceLocation)
        #expect(e?["innerError"]?.objectValue?.keys.sorted() == ["client-request-id", "date", "request-id"], "\(what)", sourceLocation: sourceLocation)
        #expect(e?["innerError"]?["date"]?.stringValue?.count == 19, "innerError.date has no offset: \(what)", sourceLocation: sourceLocation)
        #expect(r.header("Content-Type")?.hasPrefix("application/json") == true, "\(what)", sourceLocation: sourceLocation)
    }

    @Test func twoCertificatesAndASecretAppearWithTheirCredentialNewestFirst() async throws {
        let w = try SignInWorld()
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)
        w.rig.clock.advance(by: 60)
        try await w.signIn(w.certB)
        w.rig.clock.advance(by: 60)
        #expect(await w.signInWithSecret().status == 200)
        w.rig.clock.advance(by: 60)
        #expect(await w.signInWithSecret("not-the-secret").status == 401)
        let token = try await w.readerToken()
        let r = await w.get("/beta/auditLogs/signIns", [("$filter", "\(SignInWorld.servicePrincipals) and appId eq '\(w.app.appId)'")], token: token)
        #expect(r.status == 200)
        #expect(r.json?["@odata.context"] == "https://login.emulator.test/beta/$metadata#auditLogs/signIns")
        #expect(r.json?["@odata.nextLink"] == nil)
        let log = try #require(r.json?["value"]?.arrayValue)
        try #require(log.count == 4)
        let (failed, viaSecret, viaB, viaA) = (log[0], log[1], log[2], log[3])
        let keyA = try w.keyId(w.certA), keyB = try w.keyId(w.certB), keySecret = try w.secretKeyId()
        // newest first
        #expect(log.map { $0["createdDateTime"] } == [iso(t0 + 180), iso(t0 + 120), iso(t0 + 60), iso(t0)])
        for (e, cred, keyId) in [(viaA, w.certA, keyA), (viaB, w.certB, keyB)] {
            #expect(e["servicePrincipalCredentialKeyId"]?.stringValue == keyId)
            #expect(e["servicePrincipalCredentialThumbprint"]?.stringValue == cred.certificate.sha1Thumbprint.hex)
            #expect(e["clientCredentialType"] == "clientAssertion")
            #expect(e["status"] == .object(["errorCode": 0, "failureReason": .null, "additionalDetails": .null]))
        }
        #expect(viaA["servicePrincipalCredentialKeyId"] != viaB["servicePrincipalCredentialKeyId"])
        #expect(viaSecret["clientCredentialType"] == "clientSecret")
        #expect(viaSecret["servicePrincipalCredentialKeyId"]?.stringValue == keySecret)
        #expect(viaSecret["servicePrincipalCredentialThumbprint"] == .null)
        #expect(failed["clientCredentialType"] == "clientSecret")
        #expect(failed["status"]?["errorCode"] == 7000215)
        #expect(failed["status"]?["failureReason"]?.stringValue?.hasPrefix("Invalid client secret provided.") == true)
        #expect(failed["servicePrincipalCredentialKeyId"] == .null)
        // every entry names the app, its service principal and the resource, as Graph's beta signIn does
        for e in log {
            #expect(e["appId"]?.stringValue == w.app.appId)
            #expect(e["appDisplayName"] == "payroll-export")
            #expect(e["servicePrincipalId"]?.stringValue == w.app.servicePrincipalID)
            #expect(e["servicePrincipalName"] == "payroll-export")
            #expect(e["resourceId"] == "00000003-0000-0000-c000-000000000000")
            #expect(e["resourceDisplayName"] == "Microsoft Graph")
            #expect(e["ipAddress"] == "127.0.0.1")
            #expect(e["signInEventTypes"] == .array(["servicePrincipal"]))
            #expect(e["isInteractive"] == false)
            #expect(UUID(uuidString: e["id"]?.stringValue ?? "") != nil)
        }
        #expect(Set(log.compactMap { $0["id"]?.stringValue }).count == 4)
        // oldest first on request; $select keeps only what was asked for
        let asc = try await w.log([("$orderby", "createdDateTime asc"), ("$select", "id,servicePrincipalCredentialKeyId")], token: token)
        #expect(asc.map { $0["id"] } == log.reversed().map { $0["id"] })
        #expect(asc.first?.objectValue?.keys.sorted() == ["id", "servicePrincipalCredentialKeyId"])
        #expect(try await w.log([("$orderby", "createdDateTime desc")], token: token) == log)
        // a single entry by its id
        let one = await w.get("/beta/auditLogs/signIns/\(viaB["id"]!.stringValue!)", token: token)
        #expect(one.status == 200)
        #expect(one.json?["servicePrincipalCredentialKeyId"] == viaB["servicePrincipalCredentialKeyId"])
        #expect(one.json?["@odata.context"] == "https://login.emulator.test/beta/$metadata#auditLogs/signIns/$entity")
        // the UNCONFIRMED spelling of a certificate sign-in is a setting
        w.rig.emulator.settings.certificateClientCredentialType = "certificate"
        #expect(try await w.log(token: token).map { $0["clientCredentialType"] } == ["clientSecret", "clientSecret", "certificate", "certificate"])
    }

    @Test func withoutTheServicePrincipalEventTypeTheLogIsEmptyAndV1HasNoCredentialFields() async throws {
        let w = try SignInWorld()
        try await w.signIn(w.certA)
        let token = try await w.readerToken()
        #expect(try await w.log(filter: "\(SignInWorld.servicePrincipals) and appId eq '\(w.app.appId)'", token: token).count == 1)
        // Graph lists interactive user sign-ins unless an event type is asked for
        #expect(try await w.log(filter: "appId eq '\(w.app.appId)'", token: token).isEmpty)
        let unfiltered = await w.get("/beta/auditLogs/signIns", token: token)
        #expect(unfiltered.status == 200)
        #expect(unfiltered.json?["value"] == .array([]))
        #expect(try await w.log(filter: "signInEventTypes/any(t: t eq 'interactiveUser') and appId eq '\(w.app.appId)'", token: token).isEmpty)
        #expect(try await w.log(filter: "signInEventTypes/any(t: t eq 'interactiveUser' or t eq 'servicePrincipal')", token: token).count >= 2,
                "the app's and the reader's own sign-ins")
        // v1.0: interactive user sign-ins only, and no service-principal properties to filter on
        let v1 = await w.get("/v1.0/auditLogs/signIns", [("$filter", "appId eq '\(w.app.appId)'")], token: token)
        #expect(v1.status == 200)
        #expect(v1.json?["value"] == .array([]))
        expectGraphError(await w.get("/v1.0/auditLogs/signIns", [("$filter", SignInWorld.servicePrincipals)], token: token), 400, "BadRequest",
                         "Could not find a property named 'signInEventTypes' on type 'microsoft.graph.signIn'.")
        // the rest of Graph is not served under /beta
        expectGraphError(await w.get("/beta/applications", token: token), 400, "BadRequest", "Resource not found for the segment 'applications'.")
    }

    @Test func filtersByAppDateAndCredential() async throws {
        let w = try SignInWorld()
        let otherCred = try w.rig.credential("other", days: 400)
        let other = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "other", certificates: [otherCred.certificate])
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)                                              // t0
        w.rig.clock.advance(by: 3600)
        _ = try await w.rig.token(clientID: other.appId, credential: otherCred)  // t0+1h
        w.rig.clock.advance(by: 3600)
        try await w.signIn(w.certB)                                              // t0+2h
        w.rig.clock.advance(by: 3600)
        try await w.signIn(w.certA)                                              // t0+3h
        let token = try await w.readerToken()
        let sp = SignInWorld.servicePrincipals
        func times(_ filter: String, _ extra: [(String, String)] = []) async throws -> [JSONValue?] {
            try await w.log(extra, filter: filter, token: token).map { $0["createdDateTime"] }
        }
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)'") == [iso(t0 + 10800), iso(t0 + 7200), iso(t0)])
        #expect(try await times("\(sp) and appId eq '\(other.appId)'") == [iso(t0 + 3600)])
        #expect(try await times("\(sp) and appId eq '\(w.app.appId.uppercased())'").count == 3, "appId compares case-insensitively")
        // a window: ge and le are inclusive
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)' and createdDateTime ge \(UTCTime.iso(t0 + 3600)) and createdDateTime le \(UTCTime.iso(t0 + 7200))")
                == [iso(t0 + 7200)])
        #expect(try await times("\(sp) and createdDateTime gt \(UTCTime.iso(t0 + 7200)) and appId eq '\(w.app.appId)'") == [iso(t0 + 10800)])
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)' and createdDateTime lt \(UTCTime.iso(t0 + 1))") == [iso(t0)])
        #expect(try await times("\(sp) and createdDateTime ge \(UTCTime.iso(t0 + 3600)) and createdDateTime le \(UTCTime.iso(t0 + 3600))") == [iso(t0 + 3600)],
                "without appId every app's sign-ins match")
        // one credential: the newest use with $top=1, in the parenthesised form scripts send
        let keyA = try w.keyId(w.certA), keyB = try w.keyId(w.certB)
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)' and servicePrincipalCredentialKeyId eq '\(keyA)'") == [iso(t0 + 10800), iso(t0)])
        let newest = try await w.log([("$top", "1")],
                                     filter: "(signInEventTypes/any(t:t eq 'servicePrincipal')) and (appId eq '\(w.app.appId)') and servicePrincipalCredentialKeyId eq '\(keyB)'",
                                     token: token)
        #expect(newest.map { $0["createdDateTime"] } == [iso(t0 + 7200)])
        #expect(try await times("\(sp) and servicePrincipalId eq '\(other.servicePrincipalID)'") == [iso(t0 + 3600)])
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)' and status/errorCode eq 0").count == 3)
        #expect(try await times("\(sp) and appId eq '\(w.app.appId)' and status/errorCode eq 7000215").isEmpty)
    }

    @Test func retentionHidesOldEntries() async throws {
        let w = try SignInWorld()
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)
        w.rig.clock.advance(by: 29 * 86_400)
        try await w.signIn(w.certB)
        w.rig.clock.advance(by: 86_400 - 1)
        var token = try await w.readerToken()
        let first = try #require(try await w.log(token: token).last)
        #expect(first["createdDateTime"] == iso(t0), "30 days minus a second: still served")
        w.rig.clock.advance(by: 2)
        token = try await w.readerToken()
        #expect(try await w.log(token: token).map { $0["createdDateTime"] } == [iso(t0 + 29 * 86_400)], "past 30 days: gone")
        let byID = await w.get("/beta/auditLogs/signIns/\(first["id"]!.stringValue!)", token: token)
        #expect(byID.status == 404)
        // the retention is a setting (7 days without a P1/P2 licence); the entry itself was kept
        w.rig.emulator.settings.signInLogRetentionDays = 40
        #expect(try await w.log(token: token).count == 2)
        w.rig.emulator.settings.signInLogRetentionDays = 0.5
        #expect(try await w.log(token: token).isEmpty)
    }

    @Test func latencyHidesNewEntriesUntilTheClockPasses() async throws {
        var settings = EmulatorSettings()
        settings.signInLogLatency = 600
        let w = try SignInWorld(settings)
        let token = try await w.readerToken()
        try await w.signIn(w.certA)
        #expect(try await w.log(token: token).isEmpty)
        w.rig.clock.advance(by: 599)
        #expect(try await w.log(token: token).isEmpty, "599 s: not yet")
        w.rig.clock.advance(by: 1)
        let log = try await w.log(token: token)
        let keyA = try w.keyId(w.certA)
        #expect(log.count == 1, "600 s: served")
        #expect(log.first?["servicePrincipalCredentialKeyId"]?.stringValue == keyA)
    }

    @Test func withoutAuditLogReadAllEveryEndpointIs403() async throws {
        let w = try SignInWorld()
        let adminCred = try w.rig.credential("admin", days: 30)
        let admin = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "admin", roles: [.applicationReadWriteAll, .directoryReadWriteAll],
                                                certificates: [adminCred.certificate])
        let adminToken = try await w.rig.token(clientID: admin.appId, credential: adminCred)
        let ownToken = try await w.rig.token(clientID: w.app.appId, credential: w.certA)
        let paths = ["/beta/auditLogs/signIns", "/beta/auditLogs/signIns/\(UUID().uuidString.lowercased())", "/v1.0/auditLogs/signIns",
                     "/beta/reports/servicePrincipalSignInActivities", "/beta/reports/appCredentialSignInActivities"]
        for (who, token) in [("Application.ReadWrite.All + Directory.ReadWrite.All", adminToken), ("no role", ownToken)] {
            for path in paths {
                expectGraphError(await w.get(path, [("$filter", "appId eq '\(w.app.appId)'")], token: token), 403, "Authentication_MSGraphPermissionMissing",
                                 "Calling principal does not have required MSGraph permissions AuditLog.Read.All", "\(who) \(path)")
            }
        }
        // no token at all is a 401, before any permission check
        let anonymous = await w.rig.graph("GET", "/beta/auditLogs/signIns", token: nil)
        expectGraphError(anonymous, 401, "InvalidAuthenticationToken", "Access token is empty.")
        // granted the role, the same app reads the log (with a token minted after the grant)
        try w.rig.emulator.grant([.applicationReadWriteAll, .auditLogReadAll], toAppId: admin.appId)
        #expect(GraphRole.auditLogReadAll.appRoleID == "b0afded3-3588-46d8-8b3d-9842eff778da")
        let granted = try await w.rig.token(clientID: admin.appId, credential: adminCred)
        #expect(await w.get("/beta/auditLogs/signIns", token: adminToken).status == 403, "the old token carries no such role")
        #expect(await w.get("/beta/auditLogs/signIns", token: granted).status == 200)
        #expect(await w.get("/beta/reports/appCredentialSignInActivities", token: granted).status == 200)
    }

    @Test func unsupportedQueriesAre400InGraphsShape() async throws {
        let w = try SignInWorld()
        let token = try await w.readerToken()
        let sp = SignInWorld.servicePrincipals
        let badFilters = [
            "\(sp) and appId eq 'a' or appId eq 'b'",
            "\(sp) and startswith(appId,'a')",
            "\(sp) and createdDateTime ge '2027-01-01T00:00:00Z'",
            "\(sp) and createdDateTime ge 2027-01-01",
            "\(sp) and createdDateTime ne 2027-01-01T00:00:00Z",
            "signInEventTypes/any(t: t eq 'robot')",
            "signInEventTypes/any(t: x eq 'servicePrincipal')",
            "\(sp) and userPrincipalName ne 'a@contoso.com'",
            "\(sp) and appId eq 'unterminated",
            "\(sp) and (appId eq 'a'",
            "\(sp) and status/errorCode eq '0'",
            "",
        ]
        for f in badFilters {
            expectGraphError(await w.get("/beta/auditLogs/signIns", [("$filter", f)], token: token), 400, "BadRequest", "Invalid filter clause", f)
        }
        for (path, f) in [("/beta/reports/appCredentialSignInActivities", "displayName eq 'x'"),
                          ("/beta/reports/servicePrincipalSignInActivities", "keyId eq '\(UUID().uuidString)'"),
                          ("/beta/reports/appCredentialSignInActivities", "appId eq 'a' or appId eq 'b'")] {
            expectGraphError(await w.get(path, [("$filter", f)], token: token), 400, "BadRequest", "Invalid filter clause", "\(path) \(f)")
        }
        for top in ["0", "1001", "ten"] {
            expectGraphError(await w.get("/beta/auditLogs/signIns", [("$filter", sp), ("$top", top)], token: token), 400, "BadRequest",
                             "Invalid page size specified: '\(top)'. Must be between 1 and 1000 inclusive.", top)
        }
        expectGraphError(await w.get("/beta/auditLogs/signIns", [("$filter", sp), ("$orderby", "appId")], token: token), 400, "BadRequest", "Invalid orderby clause")
        expectGraphError(await w.get("/beta/auditLogs/signIns", [("$filter", sp), ("$select", "id,displayName")], token: token), 400, "BadRequest",
                         "Could not find a property named 'displayName' on type 'microsoft.graph.signIn'.")
        expectGraphError(await w.get("/beta/auditLogs/signIns", [("$filter", sp), ("$skiptoken", "garbage")], token: token), 400, "BadRequest", "Invalid skip token.")
        expectGraphError(await w.rig.graph("POST", "/beta/auditLogs/signIns", token: token, json: .object([:])), 405, "Request_BadRequest",
                         "The requested HTTP method is not supported for this resource.")
    }

    @Test func pagingFollowsNextLinkWithoutLosingOrRepeatingEntries() async throws {
        let w = try SignInWorld()
        for i in 0..<5 {
            try await w.signIn(i % 2 == 0 ? w.certA : w.certB)
            w.rig.clock.advance(by: 60)
        }
        // two sign-ins at the same instant still page apart
        try await w.signIn(w.certA)
        try await w.signIn(w.certB)
        let token = try await w.readerToken()
        let all = try await w.log(token: token)
        #expect(all.count == 7)
        var target: String? = "/beta/auditLogs/signIns?" + FormEncoding.encode([("$filter", "\(SignInWorld.servicePrincipals) and appId eq '\(w.app.appId)'"), ("$top", "2")])
        var paged: [JSONValue] = []
        var pages = 0
        while let t = target {
            let r = await w.rig.graph("GET", t, token: token)
            try #require(r.status == 200)
            let value = try #require(r.json?["value"]?.arrayValue)
            #expect(value.count <= 2)
            paged += value
            pages += 1
            if pages == 1 {
                // a sign-in that happens while a reader pages is newer than the pages it reads next
                w.rig.clock.advance(by: 1)
                try await w.signIn(w.certA)
            }
            if let link = r.json?["@odata.nextLink"]?.stringValue {
                #expect(link.hasPrefix("https://login.emulator.test/beta/auditLogs/signIns?"))
                #expect(link.contains("$skiptoken=") && link.contains("$top=2") && link.contains("$filter="))
                target = String(link.dropFirst(w.rig.base.count))
            } else {
                target = nil
            }
            try #require(pages < 10)
        }
        #expect(pages == 4)
        #expect(paged.map { $0["id"] } == all.map { $0["id"] })
        // and oldest first pages the same way
        var asc: [JSONValue] = []
        target = "/beta/auditLogs/signIns?" + FormEncoding.encode([("$filter", "\(SignInWorld.servicePrincipals) and appId eq '\(w.app.appId)'"),
                                                                    ("$top", "3"), ("$orderby", "createdDateTime asc")])
        while let t = target {
            let r = await w.rig.graph("GET", t, token: token)
            asc += r.json?["value"]?.arrayValue ?? []
            target = r.json?["@odata.nextLink"]?.stringValue.map { String($0.dropFirst(w.rig.base.count)) }
        }
        #expect(asc.count == 8)
        #expect(Array(asc.prefix(7).map { $0["id"] }) == all.reversed().map { $0["id"] })
    }

    @Test func reportsGiveTheLastSignInPerCredentialAndPerServicePrincipal() async throws {
        let unusedCert = try SigningCredential.generate(subject: .init(commonName: "unused"), notBefore: EmulatorRig.start.addingTimeInterval(-300),
                                                        notAfter: EmulatorRig.start.addingTimeInterval(200 * 86_400))
        let w = try SignInWorld(extraCertificates: [unusedCert.certificate])
        let api = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "payroll-api")
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)                                          // t0
        w.rig.clock.advance(by: 3600)
        try await w.signIn(w.certB, scope: "\(api.appId)/.default")          // t0+1h, a token for payroll-api
        w.rig.clock.advance(by: 3600)
        #expect(await w.signInWithSecret().status == 200)                    // t0+2h
        w.rig.clock.advance(by: 3600)
        try await w.signIn(w.certA)                                          // t0+3h
        #expect(await w.signInWithSecret("wrong").status == 401)             // failures do not count
        let token = try await w.readerToken()
        let log = try await w.log(token: token)
        let keyA = try w.keyId(w.certA), keyB = try w.keyId(w.certB), keySecret = try w.secretKeyId()
        func requestID(at t: Date) -> JSONValue? { log.first { $0["createdDateTime"] == iso(t) && $0["status"]?["errorCode"] == 0 }?["id"] }

        let r = await w.get("/beta/reports/appCredentialSignInActivities", [("$filter", "appId eq '\(w.app.appId)'")], token: token)
        #expect(r.status == 200)
        #expect(r.json?["@odata.context"] == "https://login.emulator.test/beta/$metadata#reports/appCredentialSignInActivities")
        let rows = try #require(r.json?["value"]?.arrayValue)
        #expect(rows.count == 4, "two used certificates, one unused, one secret")
        func row(_ keyId: String) -> JSONValue? { rows.first { $0["keyId"]?.stringValue == keyId } }
        let a = try #require(row(keyA))
        #expect(a["signInActivity"] == .object(["lastSignInDateTime": iso(t0 + 10800), "lastSignInRequestId": requestID(at: t0 + 10800)!]))
        #expect(a["keyType"] == "certificate")
        #expect(a["keyUsage"] == "verify")
        #expect(a["credentialOrigin"] == "application")
        #expect(a["appId"]?.stringValue == w.app.appId)
        #expect(a["appObjectId"]?.stringValue == w.app.objectID)
        #expect(a["servicePrincipalObjectId"]?.stringValue == w.app.servicePrincipalID)
        #expect(a["resourceId"] == "00000003-0000-0000-c000-000000000000")
        #expect(a["expirationDateTime"] == iso(w.certA.certificate.notAfter))
        #expect(a["id"]?.stringValue.flatMap { Base64.decode($0) }.map { String(decoding: $0, as: UTF8.self) } == "\(keyA)|application")
        let b = try #require(row(keyB))
        #expect(b["signInActivity"]?["lastSignInDateTime"] == iso(t0 + 3600))
        #expect(b["signInActivity"]?["lastSignInRequestId"] == requestID(at: t0 + 3600))
        #expect(b["resourceId"]?.stringValue == api.appId)
        let s = try #require(row(keySecret))
        #expect(s["keyType"] == "clientSecret")
        #expect(s["keyUsage"] == .null)
        #expect(s["signInActivity"]?["lastSignInDateTime"] == iso(t0 + 7200))
        let unused = try #require(try w.rig.emulator.keyCredentials(appId: w.app.appId).first { $0.sha1 == unusedCert.certificate.sha1Thumbprint })
        #expect(row(unused.keyId)?["signInActivity"] == .null)
        #expect(row(unused.keyId)?["resourceId"] == .null)
        // one credential by keyId
        let byKey = await w.get("/beta/reports/appCredentialSignInActivities", [("$filter", "keyId eq '\(keyB)'")], token: token)
        #expect(byKey.json?["value"]?.arrayValue?.map { $0["keyId"] } == [b["keyId"]])

        // per service principal: the app as a client, payroll-api as a resource
        let sp = await w.get("/beta/reports/servicePrincipalSignInActivities", [("$filter", "appId eq '\(w.app.appId)'")], token: token)
        #expect(sp.status == 200)
        let spRow = try #require(sp.json?["value"]?.arrayValue?.first)
        #expect(sp.json?["value"]?.arrayValue?.count == 1)
        let last = JSONValue.object(["lastSignInDateTime": iso(t0 + 10800), "lastSignInRequestId": requestID(at: t0 + 10800)!])
        #expect(spRow == .object([
            "id": .string(Base64.encode(Array(w.app.appId.utf8))), "appId": .string(w.app.appId),
            "applicationAuthenticationClientSignInActivity": last, "applicationAuthenticationResourceSignInActivity": .null,
            "delegatedClientSignInActivity": .null, "delegatedResourceSignInActivity": .null, "lastSignInActivity": last,
        ]))
        let apiRow = await w.get("/beta/reports/servicePrincipalSignInActivities", [("$filter", "appId eq '\(api.appId)'")], token: token)
        let apiActivity = try #require(apiRow.json?["value"]?.arrayValue?.first)
        #expect(apiActivity["applicationAuthenticationResourceSignInActivity"]?["lastSignInDateTime"] == iso(t0 + 3600))
        #expect(apiActivity["applicationAuthenticationClientSignInActivity"] == .null)
        // unfiltered: every service principal with activity (the app, payroll-api, the reader itself), in pages
        let page1 = await w.get("/beta/reports/servicePrincipalSignInActivities", [("$top", "2")], token: token)
        #expect(page1.json?["value"]?.arrayValue?.count == 2)
        let link = try #require(page1.json?["@odata.nextLink"]?.stringValue)
        let page2 = await w.rig.graph("GET", String(link.dropFirst(w.rig.base.count)), token: token)
        #expect(page2.json?["value"]?.arrayValue?.count == 1)
        #expect(page2.json?["@odata.nextLink"] == nil)
        let appIds = ((page1.json?["value"]?.arrayValue ?? []) + (page2.json?["value"]?.arrayValue ?? [])).compactMap { $0["appId"]?.stringValue }
        #expect(Set(appIds) == [w.app.appId, api.appId, w.reader.appId])

        // the reports lag by reportLatency, independently of the sign-in log
        w.rig.emulator.settings.reportLatency = 2 * 3600
        let lagging = await w.get("/beta/reports/appCredentialSignInActivities", [("$filter", "appId eq '\(w.app.appId)'")], token: token)
        let lagged = lagging.json?["value"]?.arrayValue ?? []
        #expect(lagged.first { $0["keyId"] == a["keyId"] }?["signInActivity"]?["lastSignInDateTime"] == iso(t0), "t0+3h is not in the report yet")
        #expect(lagged.first { $0["keyId"] == b["keyId"] }?["signInActivity"]?["lastSignInDateTime"] == iso(t0 + 3600))
        #expect(lagged.first { $0["keyId"] == s["keyId"] }?["signInActivity"] == .null, "t0+2h is not in the report yet")
        #expect(try await w.log(token: token).count == 5, "the sign-in log is not delayed by reportLatency")
    }

    @Test func theAuditLogThrottleAnswers429WithRetryAfter() async throws {
        let plain = try SignInWorld()
        let plainToken = try await plain.readerToken()
        for _ in 0..<12 { #expect(await plain.get("/beta/auditLogs/signIns", token: plainToken).status == 200, "off by default") }

        var settings = EmulatorSettings()
        settings.throttling.enabled = true
        let w = try SignInWorld(settings)
        let token = try await w.readerToken()
        for path in ["/beta/auditLogs/signIns", "/beta/auditLogs/signIns", "/beta/reports/servicePrincipalSignInActivities",
                     "/beta/reports/appCredentialSignInActivities", "/beta/auditLogs/signIns"] {
            #expect(await w.get(path, token: token).status == 200, "\(path)")
        }
        w.rig.clock.advance(by: 4)
        let r = await w.get("/beta/reports/appCredentialSignInActivities", token: token)
        expectGraphError(r, 429, "TooManyRequests", "Too many requests. Please retry after the time in the Retry-After header.")
        #expect(r.header("Retry-After") == "6", "the first of the five leaves the 10 s window in 6 s")
        #expect(r.header("x-ms-throttle-scope") == "Tenant_Application/Read/\(w.reader.appId)/\(w.rig.tenant.id)")
        // another app has its own budget
        let adminCred = try w.rig.credential("other-reader", days: 30)
        let other = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "other-reader", roles: [.auditLogReadAll], certificates: [adminCred.certificate])
        #expect(await w.get("/beta/auditLogs/signIns", token: try await w.rig.token(clientID: other.appId, credential: adminCred)).status == 200)
        w.rig.clock.advance(by: 6)
        #expect(await w.get("/beta/auditLogs/signIns", token: token).status == 200)
        // the budget is a setting
        w.rig.emulator.settings.throttling.auditLogRequestsPerWindow = 0
        for _ in 0..<8 { #expect(await w.get("/beta/auditLogs/signIns", token: token).status == 200) }
    }

    @Test func theClientReadsTheSameSignInsFromBeta() async throws {
        let w = try SignInWorld()
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)
        w.rig.clock.advance(by: 60)
        try await w.signIn(w.certB)
        w.rig.clock.advance(by: 60)
        #expect(await w.signInWithSecret().status == 200)
        w.rig.clock.advance(by: 60)
        let wire = try await w.log(token: try await w.readerToken())
        let keyA = try w.keyId(w.certA), keyB = try w.keyId(w.certB), keySecret = try w.secretKeyId()
        let clients = LabClients(emulator: w.rig.emulator, tenantID: w.rig.tenant.id)
        #expect(clients.endpoints.graphBaseURL.hasSuffix("/v1.0"))
        let graph = clients.graph(as: w.reader.appId, w.readerCred)
        let all = try await graph.servicePrincipalSignIns(appId: w.app.appId, since: t0)
        #expect(all.map(\.id) == wire.compactMap { $0["id"]?.stringValue })
        #expect(all.map(\.createdDateTime) == [t0 + 120, t0 + 60, t0])
        #expect(all.map(\.clientCredentialType) == ["clientSecret", "clientAssertion", "clientAssertion"])
        #expect(all.map(\.servicePrincipalCredentialKeyId) == [keySecret, keyB, keyA])
        #expect(all.map(\.servicePrincipalCredentialThumbprint) == [nil, w.certB.certificate.sha1Thumbprint.hex, w.certA.certificate.sha1Thumbprint.hex])
        #expect(all.map(\.usedSecret) == [true, false, false])
        #expect(all.map(\.usedCertificate) == [false, true, true])
        #expect(all.allSatisfy { $0.succeeded && $0.servicePrincipalId == w.app.servicePrincipalID && $0.signInEventTypes == ["servicePrincipal"] })
        // a window and one credential
        #expect(try await graph.servicePrincipalSignIns(appId: w.app.appId, since: t0 + 30, until: t0 + 90).map(\.createdDateTime) == [t0 + 60])
        #expect(try await graph.servicePrincipalSignIns(appId: w.app.appId, since: t0, credentialKeyId: keyA).map(\.id) == [all[2].id])
        // small pages: every nextLink followed
        let before = w.rig.emulator.requestCounts()["signIns", default: 0]
        #expect(try await graph.servicePrincipalSignIns(appId: w.app.appId, since: t0, pageSize: 1).map(\.id) == all.map(\.id))
        #expect(w.rig.emulator.requestCounts()["signIns", default: 0] - before == 3)
        // the beta URL beside any Graph base
        #expect(GraphClient.betaBaseURL("https://graph.microsoft.com/v1.0") == "https://graph.microsoft.com/beta")
        #expect(GraphClient.betaBaseURL("https://graph.microsoft.com/v1.0/") == "https://graph.microsoft.com/beta")
        #expect(GraphClient.betaBaseURL("https://graph.microsoft.com/beta") == "https://graph.microsoft.com/beta")
        #expect(GraphClient.betaBaseURL("https://graph.microsoft.com") == "https://graph.microsoft.com/beta")
        #expect(GraphClient.betaBaseURL("http://127.0.0.1:8443/V1.0") == "http://127.0.0.1:8443/beta")
        // without AuditLog.Read.All the client's error says so
        let denied = clients.graph(as: w.app.appId, w.certA)
        do {
            _ = try await denied.servicePrincipalSignIns(appId: w.app.appId, since: t0)
            Issue.record("expected a 403")
        } catch let e as EntraError {
            #expect(e.kind == .forbidden)
            #expect(e.graphCode == "Authentication_MSGraphPermissionMissing")
        }
    }

    // MARK: delegated (user) sign-ins

    @Test func delegatedSignInsAreListedByEventTypeInteractiveOnesWithoutAFilter() async throws {
        let w = try SignInWorld()
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)                                              // app-only, t0
        w.rig.clock.advance(by: 60)
        let alice = try w.delegated("alice@contoso.com")                         // interactive, t0+60
        w.rig.clock.advance(by: 60)
        let bob = try w.delegated("bob@contoso.com", interactive: false)         // non-interactive, t0+120
        let token = try await w.readerToken()
        // without an event type: interactive user sign-ins only, as Graph lists them
        #expect(try await w.ids(nil, token: token) == [alice.id])
        #expect(try await w.ids("appId eq '\(w.app.appId)'", token: token) == [alice.id])
        #expect(try await w.ids("signInEventTypes/any(t: t eq 'interactiveUser')", token: token) == [alice.id])
        // the other kinds only under their own filter
        #expect(try await w.ids("signInEventTypes/any(t: t eq 'nonInteractiveUser')", token: token) == [bob.id])
        #expect(try await w.ids("signInEventTypes/any(t: t eq 'interactiveUser' or t eq 'nonInteractiveUser')", token: token) == [bob.id, alice.id])
        #expect(try await w.ids("signInEventTypes/any(t: t eq 'managedIdentity')", token: token).isEmpty)
        let appOnly = try await w.log(token: token)
        #expect(appOnly.map { $0["createdDateTime"] } == [iso(t0)], "the servicePrincipal filter lists no user sign-in")
        // an entry names the user and the app the user signed in to
        let a = try #require(try await w.entries(token: token).first)
        #expect(a["userPrincipalName"] == "alice@contoso.com")
        #expect(a["userId"]?.stringValue == alice.userId)
        #expect(UUID(uuidString: alice.userId ?? "") != nil)
        #expect(a["isInteractive"] == true)
        #expect(a["signInEventTypes"] == .array(["interactiveUser"]))
        #expect(a["appId"]?.stringValue == w.app.appId)
        #expect(a["appDisplayName"] == "payroll-export")
        #expect(a["createdDateTime"] == iso(t0 + 60))
        #expect(a["resourceDisplayName"] == "Microsoft Graph")
        #expect(a["status"]?["errorCode"] == 0)
        #expect(a["clientCredentialType"] == "none", "a public client")
        #expect(a["servicePrincipalCredentialKeyId"] == .null)
        #expect(a["servicePrincipalId"] == .null)
        let b = try #require(await w.get("/beta/auditLogs/signIns/\(bob.id)", token: token).json)
        #expect(b["userPrincipalName"] == "bob@contoso.com")
        #expect(b["isInteractive"] == false)
        #expect(b["signInEventTypes"] == .array(["nonInteractiveUser"]))
        // app-only entries name no user; one user keeps one id; $select names the user's properties
        #expect(appOnly.first?["userPrincipalName"] == .null)
        #expect(try w.delegated("ALICE@contoso.com").userId == alice.userId)
        let selected = try await w.entries([("$select", "id,userPrincipalName")], token: token)
        #expect(selected.first?.objectValue?.keys.sorted() == ["id", "userPrincipalName"])
    }

    @Test func delegatedSignInsFilterByAppUserAndTime() async throws {
        let w = try SignInWorld()
        let other = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "other-web")
        let t0 = w.rig.clock.now()
        try w.delegated("alice@contoso.com")                                     // t0
        try w.delegated("alice@contoso.com", appId: other.appId, at: t0 + 3600)  // t0+1h
        try w.delegated("bob@contoso.com", at: t0 + 7200)                        // t0+2h
        w.rig.clock.advance(by: 3 * 3600)
        let token = try await w.readerToken()
        func times(_ filter: String) async throws -> [JSONValue?] {
            try await w.entries([("$filter", filter)], token: token).map { $0["createdDateTime"] }
        }
        #expect(try await times("appId eq '\(w.app.appId)'") == [iso(t0 + 7200), iso(t0)])
        #expect(try await times("appId eq '\(other.appId.uppercased())'") == [iso(t0 + 3600)])
        #expect(try await times("appId eq '\(w.app.appId)' and createdDateTime ge \(UTCTime.iso(t0 + 1))") == [iso(t0 + 7200)])
        #expect(try await times("createdDateTime ge \(UTCTime.iso(t0 + 3600)) and createdDateTime lt \(UTCTime.iso(t0 + 7200))") == [iso(t0 + 3600)])
        #expect(try await times("userPrincipalName eq 'ALICE@contoso.com'") == [iso(t0 + 3600), iso(t0)])
        #expect(try await times("signInEventTypes/any(t: t eq 'interactiveUser') and appId eq '\(w.app.appId)' and createdDateTime le \(UTCTime.iso(t0))")
                == [iso(t0)])
    }

    @Test func retentionAndLatencyApplyToDelegatedSignIns() async throws {
        var settings = EmulatorSettings()
        settings.signInLogLatency = 600
        let w = try SignInWorld(settings)
        let alice = try w.delegated("alice@contoso.com")
        w.rig.clock.advance(by: 599)
        var token = try await w.readerToken()
        #expect(try await w.ids(nil, token: token).isEmpty, "599 s: not yet")
        w.rig.clock.advance(by: 1)
        #expect(try await w.ids(nil, token: token) == [alice.id], "600 s: served")
        w.rig.clock.advance(by: 30 * 86_400)
        token = try await w.readerToken()
        #expect(try await w.ids(nil, token: token).isEmpty, "past 30 days: gone")
        #expect(await w.get("/beta/auditLogs/signIns/\(alice.id)", token: token).status == 404)
        w.rig.emulator.settings.signInLogRetentionDays = 40
        #expect(try await w.ids(nil, token: token) == [alice.id], "kept, and served under a longer retention")
    }

    @Test func theServicePrincipalReportShowsTheLastDelegatedSignIn() async throws {
        let w = try SignInWorld()
        let api = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "payroll-api")
        let t0 = w.rig.clock.now()
        try await w.signIn(w.certA)                                              // app-only, t0
        let token = try await w.readerToken()
        #expect(await w.servicePrincipalActivity(w.app.appId, token: token)?["delegatedClientSignInActivity"] == .null, "no delegated sign-in yet")
        w.rig.clock.advance(by: 60)
        try w.delegated("alice@contoso.com", interactive: false)                 // t0+60
        w.rig.clock.advance(by: 60)
        let last = try w.delegated("bob@contoso.com", resource: api.appId)       // t0+120, a token for payroll-api
        w.rig.clock.advance(by: 60)
        let delegated = JSONValue.object(["lastSignInDateTime": iso(t0 + 120), "lastSignInRequestId": .string(last.id)])
        let row = try #require(await w.servicePrincipalActivity(w.app.appId, token: token))
        #expect(row["delegatedClientSignInActivity"] == delegated)
        #expect(row["applicationAuthenticationClientSignInActivity"]?["lastSignInDateTime"] == iso(t0), "app-only activity stays apart")
        #expect(row["lastSignInActivity"] == delegated)
        #expect(row["delegatedResourceSignInActivity"] == .null)
        let apiRow = try #require(await w.servicePrincipalActivity(api.appId, token: token))
        #expect(apiRow["delegatedResourceSignInActivity"] == delegated)
        #expect(apiRow["applicationAuthenticationResourceSignInActivity"] == .null)
        // an app with delegated use only is listed as well
        let web = try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "web-only")
        try w.delegated("carol@contoso.com", appId: web.appId)
        let webRow = try #require(await w.servicePrincipalActivity(web.appId, token: token))
        #expect(webRow["delegatedClientSignInActivity"]?["lastSignInDateTime"] == iso(t0 + 180))
        #expect(webRow["applicationAuthenticationClientSignInActivity"] == .null)
        // the report's latency applies as to app-only sign-ins
        w.rig.emulator.settings.reportLatency = 120
        #expect(await w.servicePrincipalActivity(w.app.appId, token: token)?["delegatedClientSignInActivity"]?["lastSignInDateTime"] == iso(t0 + 60))
    }

    @Test func aDelegatedSignInWithACredentialShowsItsKeyIdPerTheSetting() async throws {
        let w = try SignInWorld()
        let keySecret = try w.secretKeyId(), keyA = try w.keyId(w.certA)
        let t0 = w.rig.clock.now()
        let viaSecret = try w.delegated("alice@contoso.com", credentialKeyId: keySecret)  // a web app redeeming a code with its secret
        w.rig.clock.advance(by: 60)
        let viaCert = try w.delegated("bob@contoso.com", credentialKeyId: keyA)
        let token = try await w.readerToken()
        func entry(_ e: SignInEvent) async -> JSONValue? { await w.get("/beta/auditLogs/signIns/\(e.id)", token: token).json }
        let byKey = "signInEventTypes/any(t: t eq 'interactiveUser') and servicePrincipalCredentialKeyId eq '\(keySecret)'"
        // off by default (UNCONFIRMED): the credential's type, not which credential
        #expect(await entry(viaSecret)?["clientCredentialType"] == "clientSecret")
        #expect(await entry(viaSecret)?["servicePrincipalCredentialKeyId"] == .null)
        #expect(await entry(viaCert)?["clientCredentialType"] == "clientAssertion")
        #expect(await entry(viaCert)?["servicePrincipalCredentialThumbprint"] == .null)
        #expect(try await w.ids(byKey, token: token).isEmpty)
        // the credential report counts it either way ("the sign-in activity of the credential across all flows")
        let secretRow = await w.get("/beta/reports/appCredentialSignInActivities", [("$filter", "keyId eq '\(keySecret)'")], token: token)
        #expect(secretRow.json?["value"]?.arrayValue?.first?["signInActivity"]
                == .object(["lastSignInDateTime": iso(t0), "lastSignInRequestId": .string(viaSecret.id)]))
        // on: the keyId (and a certificate's thumbprint), as on app-only sign-ins
        w.rig.emulator.settings.delegatedSignInsCarryCredentialKeyId = true
        #expect(await entry(viaSecret)?["servicePrincipalCredentialKeyId"]?.stringValue == keySecret)
        #expect(await entry(viaSecret)?["servicePrincipalCredentialThumbprint"] == .null)
        #expect(await entry(viaCert)?["servicePrincipalCredentialKeyId"]?.stringValue == keyA)
        #expect(await entry(viaCert)?["servicePrincipalCredentialThumbprint"]?.stringValue == w.certA.certificate.sha1Thumbprint.hex)
        #expect(try await w.ids(byKey, token: token) == [viaSecret.id])
        // a keyId the application does not have is refused
        #expect(throws: GraphError.self) { try w.delegated("mallory@contoso.com", credentialKeyId: UUID().uuidString) }
    }

    @Test func theControlAPIRecordsADelegatedSignIn() async throws {
        let w = try SignInWorld()
        let keySecret = try w.secretKeyId()
        let at = w.rig.clock.now().addingTimeInterval(-30)
        func post(_ body: JSONValue) async -> EmulatorResponse {
            await w.rig.request("POST", "/_emulator/signins", headers: ["content-type": "application/json"], body: body.serialized())
        }
        let r = await post(.object(["appId": .string(w.app.appId), "userPrincipalName": "carol@contoso.com", "interactive": false,
                                    "credentialKeyId": .string(keySecret), "at": .string(UTCTime.iso(at))]))
        #expect(r.status == 201)
        #expect(r.json?["eventType"] == "nonInteractiveUser")
        #expect(r.json?["userPrincipalName"] == "carol@contoso.com")
        #expect(r.json?["credentialType"] == "secret")
        #expect(r.json?["keyId"]?.stringValue == keySecret)
        let id = try #require(r.json?["id"]?.stringValue)
        let token = try await w.readerToken()
        let listed = try await w.entries([("$filter", "signInEventTypes/any(t: t eq 'nonInteractiveUser')")], token: token)
        #expect(listed.map { $0["id"]?.stringValue } == [id])
        #expect(listed.first?["createdDateTime"] == iso(at))
        #expect(await w.rig.request("GET", "/_emulator/signins?appId=\(w.app.appId)").json?.arrayValue?.last?["userId"] == r.json?["userId"])
        // interactive by default; an unknown app or a missing user is refused
        #expect(await post(.object(["appId": .string(w.app.appId), "userPrincipalName": "dave@contoso.com"])).json?["eventType"] == "interactiveUser")
        #expect(await post(.object(["appId": .string(UUID().uuidString), "userPrincipalName": "dave@contoso.com"])).status == 404)
        #expect(await post(.object(["appId": .string(w.app.appId)])).status == 400)
    }

    /// A directory written before the sign-in log carried Graph's fields gets them when it is opened.
    @Test func anOlderStoreIsMigratedWithItsSignIns() async throws {
        let dir = try Tools.temporaryDirectory()
        let path = dir + "/old.sqlite"
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.executescript('''
            CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
            INSERT INTO grdb_migrations VALUES ('v1'), ('v2-indexed-lookups');
            CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
            CREATE TABLE tenant (id TEXT PRIMARY KEY, domain TEXT NOT NULL UNIQUE COLLATE NOCASE, display_name TEXT NOT NULL);
            CREATE TABLE application (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenant(id), app_id TEXT NOT NULL UNIQUE,
                display_name TEXT NOT NULL, sign_in_audience TEXT NOT NULL, created REAL NOT NULL, extra TEXT NOT NULL, seq INTEGER NOT NULL);
            CREATE TABLE service_principal (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenant(id), app_id TEXT NOT NULL,
                display_name TEXT NOT NULL, created REAL NOT NULL, extra TEXT NOT NULL, seq INTEGER NOT NULL, UNIQUE (tenant_id, app_id));
            CREATE TABLE sign_in (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, tenant_id TEXT NOT NULL, app_id TEXT NOT NULL,
                key_id TEXT, thumbprint TEXT, result TEXT NOT NULL, error_code INTEGER, credential_type TEXT NOT NULL);
            INSERT INTO tenant VALUES ('t1', 'old.onmicrosoft.com', 'old');
            INSERT INTO application VALUES ('o1', 't1', 'a1', 'legacy-app', 'AzureADMyOrg', 0, '{}', 1);
            INSERT INTO service_principal VALUES ('s1', 't1', 'a1', 'legacy-app', 0, '{}', 1);
            INSERT INTO sign_in (time, tenant_id, app_id, key_id, thumbprint, result, error_code, credential_type)
                VALUES (10, 't1', 'a1', 'k1', 'AB', 'success', NULL, 'certificate'), (20, 't1', 'a1', NULL, NULL, 'failure', 7000215, 'secret');
            ''')
            db.commit()
            """
        let made = try await Tools.run([Tools.python, "-c", script, path])
        try #require(made.status == 0, "\(made.stderr)")
        let store = try DirectoryStore(path: path)
        let log = try store.signIns(appId: "a1")
        #expect(log.count == 2)
        #expect(log.map(\.servicePrincipalID) == ["s1", "s1"])
        #expect(log.map(\.appDisplayName) == ["legacy-app", "legacy-app"])
        #expect(log.allSatisfy { UUID(uuidString: $0.id) != nil })
        #expect(Set(log.map(\.id)).count == 2)
        #expect(log.map { $0.clientCredentialType(certificate: "clientAssertion") } == ["clientAssertion", "clientSecret"])
        #expect(log.allSatisfy { $0.eventType == .servicePrincipal && $0.userPrincipalName == nil }, "older sign-ins are app-only")
        #expect(try store.integrityCheck() == "ok")
    }
}
