import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every command, every input it reads, given something bad: each gets exit status 1 (64 for a
/// malformed command line), a message that names the input and the fix, and no change in Entra or
/// on disk (docs/security.md, "Bad input").
@Suite(.serialized) struct CommandLineBadInputTests {

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var argv: [String]
        var env: [String: String] = [:]
        /// Part of the message the user must see.
        var says: String
    }

    final class World: @unchecked Sendable {
        let server: ServedEmulator
        let dir: String
        let env: [String: String]
        var store: CredentialStore!
        var bundlePath: String!

        init() async throws {
            server = try await ServedEmulator.start(https: true)
            dir = try Tools.temporaryDirectory("bad-input")
            env = ["AZURE_TENANT_ID": server.provisioner.tenantID, "AZURE_CLIENT_ID": server.provisioner.appId,
                   "AZURE_CLIENT_CERTIFICATE_PATH": server.stateDir + "/provisioner.pem", "AZURE_AUTHORITY_HOST": server.baseURL,
                   "KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json", "KEYROLL_POLICY_FILE": "", "KEYROLL_STORE": ""]
        }

        func write(_ name: String, _ text: String) -> String {
            let p = dir + "/" + name
            FileManager.default.createFile(atPath: p, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            return p
        }

        /// A snapshot of what a bad input must not change: every file under `dir` and Entra's apps and keys.
        func snapshot() throws -> String {
            var lines: [String] = []
            let e = FileManager.default.enumerator(atPath: dir)
            while let f = e?.nextObject() as? String {
                let attrs = try? FileManager.default.attributesOfItem(atPath: dir + "/" + f)
                let bytes = FileManager.default.contents(atPath: dir + "/" + f).map { Thumbprint.sha256(of: Array($0)).hex } ?? "-"
                lines.append("\(f) \((attrs?[.posixPermissions] as? Int) ?? 0) \(bytes)")
            }
            for app in try server.emulator.applications(tenantID: server.provisioner.tenantID) {
                lines.append("app \(app.appId) \(try server.emulator.keyCredentials(appId: app.appId).map(\.sha1.hex).sorted())")
            }
            return lines.sorted().joined(separator: "\n")
        }
    }

    func run(_ w: World, _ c: Case) async throws {
        let before = try w.snapshot()
        let binary = c.argv.first == "emulator" ? Binaries.lab : Binaries.keyroll
        let r = try await Tools.run([binary] + c.argv, environment: w.env.merging(c.env) { $1 })
        let text = r.stderr + r.stdout
        #expect(r.status == 1 || r.status == 64, "\(c): exit \(r.status): \(text.suffix(400))")
        #expect(text.contains(c.says), "\(c): the message does not say '\(c.says)': \(text.suffix(600))")
        #expect(!text.contains("BEGIN") && !text.contains("eyJ"), "\(c): secret material in the message")
        let after = try w.snapshot()
        let changed = Set(after.split(separator: "\n")).symmetricDifference(Set(before.split(separator: "\n")))
        #expect(changed.isEmpty, "\(c): something changed on disk or in Entra: \(changed.sorted())")
    }

    @Test
    func everyCommandRefusesBadInputClearlyAndTouchesNothing() async throws {
        try Binaries.require()
        let w = try await World()
        // a real identity to break in turn
        let provisioned = try await Tools.run([Binaries.keyroll, "provision", w.write("one.csv", "name\nbad-input-app\n")], environment: w.env)
        #expect(provisioned.status == 0, "\(provisioned.stderr.suffix(500))")
        let bundle = w.dir + "/bundles/bad-input-app.json"
        let bundleJSON = try JSONValue.parse(SecureFiles.read(bundle)).objectValue!
        func bundleVariant(_ name: String, _ change: (inout [String: JSONValue]) -> Void) -> String {
            var b = bundleJSON
            change(&b)
            return w.write(name, String(decoding: JSONValue.object(b).serialized(), as: UTF8.self))
        }
        let storeDir = w.dir + "/stores/good"
        let imported = try await Tools.run([Binaries.keyroll, "import", "--bundle", bundle, "--store", storeDir, "--keep-bundle"], environment: w.env)
        #expect(imported.status == 0, "\(imported.stderr)")
        let store = CredentialStore(path: storeDir)
        let active = try store.journal().active
        let hsm = try TestToken.softHSM()
        let wrongPIN = hsm.directory + "/wrong-cli.pin"
        FileManager.default.createFile(atPath: wrongPIN, contents: Data("000000\n".utf8), attributes: [.posixPermissions: 0o600])

        let otherKey = try SigningCredential.generate(subject: .init(commonName: "other"), notBefore: Date(), notAfter: Date().addingTimeInterval(86_400))
        let expired = try SigningCredential.generate(subject: .init(commonName: "old"), notBefore: Date().addingTimeInterval(-3 * 86_400),
                                                     notAfter: Date().addingTimeInterval(-86_400))
        let otherKeyPEM = try otherKey.privateKey.pkcs8PEM, expiredKeyPEM = try expired.privateKey.pkcs8PEM
        symlink(bundle, w.dir + "/bundle-link.json")
        var bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...9 { bomb += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        let big = w.write("big.csv", "")
        truncate(big, 50 * 1024 * 1024)
        FileManager.default.createFile(atPath: w.dir + "/latin1.csv", contents: Data([0x6E, 0x61, 0x6D, 0x65, 0x0A, 0xE9, 0x0A]))

        var cases: [Case] = [
            // provision: manifests
            .init(description: "provision: invalid UTF-8", argv: ["provision", w.dir + "/latin1.csv"], says: "not valid UTF-8"),
            .init(description: "provision: a 50 MB manifest", argv: ["provision", big], says: "the limit is 16 MiB"),
            .init(description: "provision: duplicate names", argv: ["provision", w.write("dup.csv", "name\na\na\n")], says: "appears twice"),
            .init(description: "provision: names that collide after mapping", argv: ["provision", w.write("collide.csv", "name\na/b\na_b\n")], says: "would both write"),
            .init(description: "provision: YAML alias bomb", argv: ["provision", w.write("bomb.yaml", bomb + "apps:\n  - name: x\n    notes: *a9\n")], says: "expands to more than"),
            .init(description: "provision: wrong columns", argv: ["provision", w.write("cols.csv", "nom,tags\nx,y\n")], says: "'name' column"),
            .init(description: "provision: unknown column", argv: ["provision", w.write("cols2.csv", "name,colour\nx,y\n")], says: "unknown column 'colour'"),
            .init(description: "provision: bundle outside the bundle folder", argv: ["provision", w.write("escape.csv", "name,bundle\nx,../../x.json\n")], says: "inside the bundle folder"),
            .init(description: "provision: more replicas than an app holds", argv: ["provision", w.write("many.yaml", "apps:\n  - name: web\n    replicas: 251\n")], says: "at most 250"),
            .init(description: "provision: replicas not a number", argv: ["provision", w.write("word.csv", "name,replicas\nweb,three\n")], says: "must be a whole number"),
            .init(description: "provision: no replicas", argv: ["provision", w.write("zero.yaml", "apps: [{name: web, replicas: 0}]\n")], says: "give 1 or more"),
            // retire and rebootstrap: replicas
            .init(description: "retire: a replica name that is a path", argv: ["retire", "--app", "bad-input-app", "--replica", "../r1", "--reason", "x"], says: "is not a replica name"),
            .init(description: "retire: a replica the app does not have", argv: ["retire", "--app", "bad-input-app", "--replica", "r7", "--reason", "x", "--audit-log", w.dir + "/a.log"], says: "holds no key of replica r7"),
            .init(description: "rebootstrap: a bad replica name", argv: ["rebootstrap", "--app", "bad-input-app", "--replica", "R1", "--out", w.dir + "/x.json", "--reason", "x"], says: "is not a replica name"),
            // adopt, secrets retire, audit --credentials
            .init(description: "adopt: nothing named", argv: ["adopt", "--out-dir", w.dir + "/adopted", "--reason", "x"], says: "Name the apps to adopt"),
            .init(description: "adopt: no replicas", argv: ["adopt", "--app", "bad-input-app", "--replicas", "0", "--out-dir", w.dir + "/adopted", "--reason", "x"], says: "give 1 or more"),
            .init(description: "adopt: an app that does not exist", argv: ["adopt", "--app", "no-such-app", "--out-dir", w.dir + "/adopted", "--reason", "x"], says: "No application 'no-such-app'"),
            .init(description: "adopt: an empty name prefix", argv: ["adopt", "--name-prefix", "", "--out-dir", w.dir + "/adopted", "--reason", "x"], says: "--name-prefix is empty"),
            .init(description: "secrets retire: a zero window", argv: ["secrets", "retire", "--app", "bad-input-app", "--window-days", "0"], says: "--window-days 0 must be"),
            .init(description: "secrets retire: apply without a reason", argv: ["secrets", "retire", "--app", "bad-input-app", "--apply"], says: "--apply needs --reason"),
            .init(description: "secrets retire: a secret id that is a path", argv: ["secrets", "retire", "--app", "bad-input-app", "--secret", "../x"], says: "is not a keyId"),
            .init(description: "secrets retire: a secret the app does not hold", argv: ["secrets", "retire", "--app", "bad-input-app", "--secret", "0f0f0f0f-1111-4222-8333-444455556666"], says: "has no client secret"),
            .init(description: "audit: a zero credentials window", argv: ["audit", "--credentials", "--window-days", "0"], says: "--window-days 0"),
            .init(description: "audit: metrics without credentials", argv: ["audit", "--metrics-file", w.dir + "/m.prom"], says: "--metrics-file needs --credentials"),
            // provision: environment
            .init(description: "provision: no tenant", argv: ["provision", w.write("ok.csv", "name\nnever-made\n")], env: ["AZURE_TENANT_ID": ""], says: "AZURE_TENANT_ID"),
            .init(description: "provision: plain http authority", argv: ["provision", w.dir + "/ok.csv"], env: ["AZURE_AUTHORITY_HOST": "http://10.255.255.1"], says: "plain http"),
            .init(description: "provision: plain http Graph", argv: ["provision", w.dir + "/ok.csv"], env: ["KEYROLL_GRAPH_URL": "http://graph.example/v1.0"], says: "KEYROLL_GRAPH_URL"),
            .init(description: "provision: certificate and secret both set", argv: ["provision", w.dir + "/ok.csv"], env: ["AZURE_CLIENT_SECRET": "s3cr3t-value"], says: "Unset one"),
            .init(description: "roll: a zero timeout", argv: ["roll", "--store", storeDir, "--timeout", "0"], says: "--timeout"),
            .init(description: "provision: missing certificate file", argv: ["provision", w.dir + "/ok.csv"], env: ["AZURE_CLIENT_CERTIFICATE_PATH": w.dir + "/nope.pem"], says: "nope.pem"),
            // import: bundles
            .init(description: "import: a key store that is neither file nor pkcs11", argv: ["import", "--bundle", bundle, "--store", w.dir + "/s-ks1", "--key-store", "hsm"], says: "neither 'file' nor a pkcs11: URI"),
            .init(description: "import: a PIN in the pkcs11 URI", argv: ["import", "--bundle", bundle, "--store", w.dir + "/s-ks2", "--key-store", "pkcs11:token=t?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=123456"], says: "pin-source=file:"),
            .init(description: "import: a pkcs11 module that is not there", argv: ["import", "--bundle", bundle, "--store", w.dir + "/s-ks3", "--key-store", "pkcs11:token=t?module-path=/nonexistent/p11.so&pin-source=file:/nonexistent/pin"], says: "cannot be read"),
            .init(description: "import: a wrong token PIN", argv: ["import", "--bundle", bundle, "--store", w.dir + "/s-ks4", "--key-store", "pkcs11:token=\(hsm.label)?module-path=\(hsm.modulePath)&pin-source=file:\(wrongPIN)"],
                  env: hsm.environment, says: "CKR_PIN_INCORRECT"),
            .init(description: "import: truncated bundle", argv: ["import", "--bundle", w.write("trunc.json", String(String(decoding: JSONValue.object(bundleJSON).serialized(), as: UTF8.self).prefix(200))), "--store", w.dir + "/s1"], says: "cannot be read"),
            .init(description: "import: wrong format", argv: ["import", "--bundle", bundleVariant("fmt.json") { $0["format"] = "keyroll-bootstrap/9" }, "--store", w.dir + "/s2"], says: "Unsupported bootstrap bundle format"),
            .init(description: "import: key does not match the certificate", argv: ["import", "--bundle", bundleVariant("mismatch.json") {
                var c = $0["bootstrap"]!.objectValue!; c["privateKeyPEM"] = .string(otherKeyPEM); $0["bootstrap"] = .object(c)
            }, "--store", w.dir + "/s3"], says: "do not fit together"),
            .init(description: "import: expired bootstrap", argv: ["import", "--bundle", bundleVariant("expired.json") {
                var c = $0["bootstrap"]!.objectValue!; c["privateKeyPEM"] = .string(expiredKeyPEM); c["certificatePEM"] = .string(expired.certificate.pem)
                $0["bootstrap"] = .object(c)
            }, "--store", w.dir + "/s4"], says: "expired"),
            .init(description: "import: plain http in the bundle", argv: ["import", "--bundle", bundleVariant("http.json") { $0["authorityHost"] = "http://login.example" }, "--store", w.dir + "/s5"], says: "plain http"),
            .init(description: "import: a path in the object id", argv: ["import", "--bundle", bundleVariant("path.json") { $0["applicationObjectId"] = "../servicePrincipals/x" }, "--store", w.dir + "/s7"], says: "is not a GUID"),
            .init(description: "import: a query in the tenant", argv: ["import", "--bundle", bundleVariant("tenant.json") { $0["tenantId"] = "contoso.com/x?y=" }, "--store", w.dir + "/s8"], says: "neither a tenant GUID"),
            .init(description: "import: a replica name that is a path", argv: ["import", "--bundle", bundleVariant("replica.json") { $0["replica"] = "../../r1" }, "--store", w.dir + "/s9"], says: "not a replica name"),
            .init(description: "import: a symlinked bundle", argv: ["import", "--bundle", w.dir + "/bundle-link.json", "--store", w.dir + "/s6"], says: "symbolic link"),
            // roll/status: policy files
            .init(description: "roll: unknown policy field", argv: ["roll", "--store", storeDir, "--policy-file", w.write("p1.json", #"{"validityDays": 365, "rollAtFractoin": 0.5}"#)], says: "unknown field \"rollAtFractoin\""),
            .init(description: "roll: wrong policy type", argv: ["roll", "--store", storeDir, "--policy-file", w.write("p2.json", #"{"validityDays": "365"}"#)], says: "validityDays must be a number"),
            .init(description: "roll: jitter out of range", argv: ["roll", "--store", storeDir, "--policy-file", w.write("p3.json", #"{"jitterFraction": 2}"#)], says: "jitterFraction"),
            .init(description: "roll: a settle of a day", argv: ["roll", "--store", storeDir, "--policy-file", w.write("p7.json", #"{"settleSeconds": 86400}"#)], says: "settleSeconds"),
            .init(description: "roll: tenant cap of 0 days", argv: ["roll", "--store", storeDir, "--policy-file", w.write("p4.json", #"{"tenantMaximumValidityDays": 0}"#)], says: "tenantMaximumValidityDays"),
            .init(description: "agent: unknown policy field", argv: ["agent", "--store", storeDir, "--metrics-port=-1", "--policy-file", w.write("p6.json", #"{"validityDayz": 365}"#)], says: "unknown field \"validityDayz\""),
            .init(description: "agent: a LAN token endpoint", argv: ["agent", "--store", storeDir, "--metrics-port=-1", "--token-endpoint-host", "0.0.0.0"], says: "not a loopback address"),
            .init(description: "agent: a bad reload signal", argv: ["agent", "--store", storeDir, "--metrics-port=-1", "--reload-signal", "x"], says: "PID:SIGNAL"),
            .init(description: "token-endpoint env: not enabled", argv: ["token-endpoint", "env", "--store", storeDir], says: "enable it first"),
            .init(description: "token-endpoint enable: a scope for a resource", argv: ["token-endpoint", "enable", "--store", storeDir, "--allow-resource", "https://graph.microsoft.com/.default"], says: "not a scope"),
            .init(description: "status: policy not JSON", argv: ["status", "--store", storeDir, "--policy-file", w.write("p5.json", "validity: 1y")], says: "not a JSON object"),
            // emulator
            .init(description: "emulator: a LAN address", argv: ["emulator", "--host", "0.0.0.0", "--state-dir", w.dir + "/emu"], says: "--allow-remote"),
        ]
        for c in cases { try await run(w, c) }

        // stores: each damage in turn, on a copy of the good store
        func damaged(_ name: String, _ damage: (CredentialStore) throws -> Void) throws -> String {
            let copy = w.dir + "/stores/" + name
            _ = try Tools.run(["cp", "-a", storeDir, copy])
            try damage(CredentialStore(path: copy))
            return copy
        }
        cases = [
            .init(description: "roll: corrupt journal", argv: ["roll", "--store", try damaged("corrupt") { try "{".write(toFile: $0.path + "/journal.json", atomically: true, encoding: .utf8) }], says: "journal.json is not valid"),
            .init(description: "roll: missing key", argv: ["roll", "--store", try damaged("keyless") { try FileManager.default.removeItem(atPath: $0.keyPath(active)) }], says: "is missing"),
            .init(description: "roll: readable by others", argv: ["roll", "--store", try damaged("open") { chmod($0.keyPath(active), 0o644) }], says: "chmod 600"),
            .init(description: "roll: wrong owner", argv: ["roll", "--store", try damaged("foreign") { chown($0.keyPath(active), 65534, 65534) }], says: "chown"),
            .init(description: "roll: symlinked key", argv: ["roll", "--store", try damaged("linked") {
                try FileManager.default.moveItem(atPath: $0.keyPath(active), toPath: $0.path + "/elsewhere.pem")
                symlink($0.path + "/elsewhere.pem", $0.keyPath(active))
            }], says: "symbolic link"),
            .init(description: "roll: an identity.json whose appId is a path", argv: ["roll", "--store", try damaged("pathid") {
                var id = try JSONValue.parse(SecureFiles.read($0.path + "/identity.json")).objectValue!
                id["appId"] = "00000000-0000-0000-0000-000000000000/../x"
                try SecureFiles.writeAtomically(JSONValue.object(id).serialized(), to: $0.path + "/identity.json", mode: 0o600)
            }], says: "is not a GUID"),
            .init(description: "token-endpoint enable: run by a user who does not own the store (sudo)", argv: ["token-endpoint", "enable", "--store", try damaged("otherowner") {
                chown($0.path, 65534, 65534)
            }], says: "runuser -u"),
            .init(description: "status: not a store", argv: ["status", "--store", w.dir], says: "is not a KeyRoll store"),
            .init(description: "token-endpoint env: enabled, but no agent has served it (the address is not known)", argv: ["token-endpoint", "env", "--store", try damaged("unserved") {
                try $0.enableTokenEndpoint(TokenEndpointSettings())
            }], says: "--port PORT"),
            .init(description: "token-endpoint rotate-secret: again while the secret it replaced last time is still accepted", argv: ["token-endpoint", "rotate-secret", "--store", try damaged("rotated") {
                try $0.enableTokenEndpoint(TokenEndpointSettings())
                try $0.rotateTokenEndpointSecret(overlap: 3600, now: Date())
            }], says: "--force"),
        ]
        for c in cases { try await run(w, c) }
        await w.server.stop()
    }
}
