import EntraClient
import Foundation
import KeyRollPrimitives
import Provisioning
import Testing

@Suite struct CredentialEvidenceTests {
    let w = SecretWorld()
    let day = SecretWorld.day

    func usage(_ signIns: LogRead<ServicePrincipalSignIn>, report: [AppCredentialSignInActivity] = [], app: Application? = nil, window: Int = 14,
               retention: Double = 30) -> [String: CredentialUsage] {
        Dictionary(uniqueKeysWithValues: EvidenceRules.usage(app ?? w.app, signIns: signIns, report: report, now: w.now, windowDays: window,
                                                             retentionDays: retention).map { ($0.keyId, $0) })
    }

    @Test func everyCredentialHasTypeOriginAndVerdict() {
        var app = w.app
        app.keyCredentials?.append(KeyCredential(keyId: "b0000000-0000-4000-8000-00000000000b", displayName: "CN=keyroll-bootstrap@r2",
                                                 startDateTime: w.now - day, endDateTime: w.now + day, type: "AsymmetricX509Cert", usage: "Verify"))
        let u = usage(.read(w.daily(0..<3) + [w.secretUse(age: 20 * day)]), app: app)
        #expect(u.count == 4)
        #expect(u[w.keyRoll.keyId]?.origin == .keyroll && u[w.keyRoll.keyId]?.type == "certificate")
        #expect(u["b0000000-0000-4000-8000-00000000000b"]?.origin == .keyrollBootstrap)
        #expect(u[w.foreign.keyId]?.origin == .foreignCertificate)
        #expect(u[w.secret.keyId]?.origin == .secret && u[w.secret.keyId]?.type == "secret")
        #expect(u[w.keyRoll.keyId]?.verdict == .inUse(lastUsed: w.now - 3600))
        #expect(u[w.keyRoll.keyId]?.lastSignInSource == .signInLog)
        #expect(u[w.secret.keyId]?.verdict == .unused(days: 20))
        #expect(u[w.foreign.keyId]?.verdict == .unused(days: 30), "never seen: no more days than the log keeps")
    }

    @Test func unusedNeverClaimsMoreThanTheLogShows() {
        var app = w.app
        app.passwordCredentials = [PasswordCredential(keyId: "c0000000-0000-4000-8000-00000000000c", start: w.now - 3 * day - 60, end: w.now + day)]
        #expect(usage(.read([]), app: app)["c0000000-0000-4000-8000-00000000000c"]?.verdict == .unused(days: 3), "counted from its creation")
        #expect(usage(.read([]), retention: 7)[w.secret.keyId]?.verdict == .unknown(.outsideRetention), "14 days cannot be shown by a 7-day log")
        #expect(usage(.read([]), window: 7, retention: 7)[w.secret.keyId]?.verdict == .unused(days: 7))
    }

    @Test func theReportIsTheSecondSource() {
        let recent = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId, keyType: "clientSecret", lastSignInDateTime: w.now - 2 * day)
        let u = usage(.read([]), report: [recent])[w.secret.keyId]
        #expect(u?.verdict == .inUse(lastUsed: w.now - 2 * day) && u?.lastSignInSource == .report)
        let old = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId, lastSignInDateTime: w.now - 45 * day)
        #expect(usage(.read([]), report: [old])[w.secret.keyId]?.verdict == .unused(days: 45))
        // the newer source wins; the log on a tie
        let both = usage(.read([w.secretUse(age: 5 * day)]), report: [recent])[w.secret.keyId]
        #expect(both?.lastSignIn == w.now - 2 * day && both?.lastSignInSource == .report)
    }

    @Test func anUnreadableLogIsUnknownAndSaysWhy() {
        #expect(usage(.unreadable(.noLicence))[w.secret.keyId]?.verdict == .unknown(.noLicence))
        #expect(usage(.unreadable(.noPermission))[w.keyRoll.keyId]?.verdict == .unknown(.noPermission))
        // a use the report shows is evidence; its silence is not
        let recent = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId, lastSignInDateTime: w.now - day)
        let old = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId, lastSignInDateTime: w.now - 40 * day)
        #expect(usage(.unreadable(.noLicence), report: [recent])[w.secret.keyId]?.verdict == .inUse(lastUsed: w.now - day))
        #expect(usage(.unreadable(.noLicence), report: [old])[w.secret.keyId]?.verdict == .unknown(.noLicence))
    }

    @Test func reportRowsAreReadLeniently() throws {
        // Microsoft's documented example: expirationDate, keyType "secret"-style values, a one-digit offset
        let row = try JSONValue.parse(Array("""
            {"appId":"f4d9654f-0305-4072-878c-8bf266dfe146","credentialOrigin":"application","expirationDate":"2021-04-01T21:36:48-8:00",
             "keyId":"83f45296-fb8f-4aaa-a399-ac51084e02b7","keyType":"secret","keyUsage":"sign",
             "signInActivity":{"lastSignInDateTime":"2021-03-18T00:00:00-8:00","lastSignInRequestId":"guid1"}}
            """.utf8))
        let r = try #require(AppCredentialSignInActivity.parse(row))
        #expect(r.keyType == "clientSecret")
        #expect(r.expirationDateTime == UTCTime.parseISO("2021-04-02T05:36:48Z"))
        #expect(r.lastSignInDateTime == UTCTime.parseISO("2021-03-18T08:00:00Z"))
        #expect(AppCredentialSignInActivity.parse(try JSONValue.parse(Array("{\"keyId\":\"x\"}".utf8))) == nil)
        let schema = try JSONValue.parse(Array("""
            {"appId":"a","keyId":"k","keyType":"certificate","expirationDateTime":"2030-01-01T00:00:00Z","signInActivity":null}
            """.utf8))
        let s = try #require(AppCredentialSignInActivity.parse(schema))
        #expect(s.keyType == "certificate" && s.expirationDateTime == UTCTime.parseISO("2030-01-01T00:00:00Z") && s.lastSignInDateTime == nil)
    }

    @Test func theViewRendersEveryFormatAndEscapes() throws {
        var app = w.app
        app.displayName = "evil,<script>alert(1)</script>"
        let creds = EvidenceRules.usage(app, signIns: .read(w.daily(0..<1)), report: [], now: w.now, windowDays: 14, retentionDays: 30)
        let view = CredentialReport.View(generatedAt: w.now, windowDays: 14, retentionDays: 30, credentials: creds)
        let csv = CredentialReport.csv(view).split(separator: "\n")
        #expect(csv.count == 4 && csv[0].hasPrefix("app,app_id,key_id,type,origin"))
        #expect(csv[1].hasPrefix("\"evil,<script>"), "a comma is quoted")
        let html = CredentialReport.htmlSection(view)
        #expect(!html.contains("<script>") && html.contains("evil,&lt;script&gt;"))
        let page = CredentialReport.embed(html, in: "<html><body><p>x</p></body></html>")
        #expect(page.hasSuffix("</section>\n</body></html>"))
        let decoded = try JSONDecoder.utcDates().decode(CredentialReport.View.self, from: Data(CredentialReport.json(view).utf8))
        #expect(decoded.credentials == creds)
        #expect(CredentialReport.json(view).contains("\"verdict\" : \"in-use\""))
        let table = CredentialReport.table(view)
        #expect(table.contains("in use") && table.contains("unused for 30 days") && table.contains("3 credentials: 1 in use"))
    }
}
