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

/// Whatever a user, a file or the network hands KeyRoll: it refuses clearly, touches nothing it
/// does not own, and leaks nothing. One test per finding of the hostile-input review.
@Suite struct HostileInputTests {
    // MARK: plain HTTP to anywhere

    @Test(arguments: [
        ("https://login.microsoftonline.com", true), ("http://127.0.0.1:8443", true), ("http://127.8.9.10/x", true),
        ("http://localhost:1234", true), ("http://[::1]:99/v1.0", true),
        ("http://10.0.0.1", false), ("http://evil.example/127.0.0.1", false), ("http://127.0.0.1.evil.example", false),
        ("ftp://127.0.0.1", false), ("https://user:pw@login.example", false), ("login.microsoftonline.com", false), ("", false),
    ])
    func onlyHTTPSOrLoopbackHTTPIsAllowed(_ url: String, _ allowed: Bool) {
        let accepted = (try? SecureURL.check(url, what: "test")) != nil
        #expect(accepted == allowed, "\(url)")
    }

    @Test func theTransportRefusesPlainHTTPToAnotherHostBeforeAnyTraffic() async throws {
        let transport = try AsyncHTTPTransport()
        let started = Date()
        do {
            _ = try await transport.send(HTTPRequestMessage(method: "POST", url: "http://192.0.2.1/tenant/oauth2/v2.0/token"), timeout: 30)
            Issue.record("sent")
        } catch let e as SecureURL.Refused {
            #expect(e.description.contains("plain http") && e.description.contains("192.0.2.1"), "\(e)")
        }
        #expect(Date().timeIntervalSince(started) < 2, "refused at once, not after a connect timeout")
        try await transport.shutdown()
    }

    /// Forwards to the emulator, but makes every application list point its nextLink at another host.
    struct HostileNextLink: HTTPTransport {
        let base: InProcessTransport
        let seen: URLLog
        func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
            seen.append(request.url)
            var r = try await base.send(request, timeout: timeout)
            if request.method == "GET", request.url.contains("/applications?"), var page = try? JSONValue.parse(r.body).objectValue {
                page["@odata.nextLink"] = "https://graph.evil.example/v1.0/applications?$skiptoken=steal"
                r.body = JSONValue.object(page).serialized()
            }
            return r
        }
    }

    final class URLLog: @unchecked Sendable {
        private let lock = NSLock()
        private var urls: [String] = []
        func append(_ u: String) { lock.withLock { urls.append(u) } }
        var all: [String] { lock.withLock { urls } }
    }

    @Test func aNextLinkToAnotherOriginIsNotFollowed() async throws {
        let fleet = try await Fleet()
        _ = try await fleet.agentStore("listed")
        let log = URLLog()
        let transport = HostileNextLink(base: fleet.transport, seen: log)
        let graph = fleet.provisioner.graph
        let hostile = GraphClient(endpoints: graph.endpoints, tokens: TokenProvider(endpoints: graph.endpoints, clientID: graph.tokens.clientID, transport: transport,
                                                                                     clock: fleet.rig.clock),
                                  auth: graph.auth, transport: transport, clock: fleet.rig.clock)
        await #expect(throws: EntraError.self) { for try await _ in hostile.applications() {} }
        #expect(!log.all.contains { $0.contains("evil.example") }, "the bearer token never went to another host: \(log.all)")
    }

    @Test func aBundleOrStoreWithPlainHTTPEndpointsIsRefused() async throws {
        let fleet = try await Fleet()
        let result = try await fleet.provisioner.provision(name: "cleartext")
        var bundle = result.bundle
        bundle.graphBaseURL = "http://graph.evil.example/v1.0"
        let store = CredentialStore(path: fleet.root + "/cleartext")
        #expect(throws: SecureURL.Refused.self) { try Roller.importBundle(bundle, into: store, now: fleet.rig.clock.now()) }
        #expect(!FileManager.default.fileExists(atPath: store.path), "nothing written")
        // a store whose identity.json was edited to plain http is refused before any traffic
        let (good, _) = try await fleet.agentStore("edited")
        var identity = try good.identity()
        identity.authorityHost = "http://login.evil.example"
        try SecureFiles.writeAtomically(Array(try JSONEncoder().encode(identity)), to: good.path + "/identity.json")
        #expect(throws: SecureURL.Refused.self) { try fleet.roller(good) }
    }

    // MARK: names are data, never paths

    @Test func manifestNamesMapToFilesInsideTheBundleFolder() throws {
        let dir = try Tools.temporaryDirectory("manifest")
        let m = try Manifest.parseCSV("name\n/tmp/x/victim\n../..\n.hidden\nO'Brien\nplain-name_1.v2\n", baseDir: dir)
        let paths = m.apps.map(\.bundlePath)
        #expect(paths == ["\(dir)/bundles/_tmp_x_victim.json", "\(dir)/bundles/_._...json", "\(dir)/bundles/_hidden.json",
                          "\(dir)/bundles/O_Brien.json", "\(dir)/bundles/plain-name_1.v2.json"])
        for p in paths { #expect(p.hasPrefix(dir + "/bundles/") && !p.dropFirst(dir.count).contains("/../")) }
    }

    @Test(arguments: [
        ("name\na b\na_b\n", "would both write"),
        ("name\nok\nbad\u{1}name\n", "control characters"),
        ("name,bundle\nx,../escape.json\n", "inside the bundle folder"),
        ("name,bundle\nx,/etc/cron.d/x.json\n", "inside the bundle folder"),
        ("name,colour\nx,red\n", "unknown column 'colour'"),
        ("name\nx\nx\n", "appears twice"),
    ])
    func badManifestsAreRefusedWithTheReason(_ csv: String, _ reason: String) throws {
        #expect { try Manifest.parseCSV(csv, baseDir: "/tmp") } throws: { "\($0)".contains(reason) }
    }

    @Test func hostileManifestFilesAreRefusedQuickly() throws {
        let dir = try Tools.temporaryDirectory("manifest-files")
        // a YAML alias bomb: 9 levels of 10 aliases = 10^9 values once expanded
        var bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...9 { bomb += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        bomb += "apps:\n  - name: x\n    notes: *a9\n"
        try bomb.write(toFile: dir + "/bomb.yaml", atomically: true, encoding: .utf8)
        let started = Date()
        #expect { try Manifest.load(path: dir + "/bomb.yaml") } throws: { "\($0)".contains("expands to more than") }
        #expect(Date().timeIntervalSince(started) < 10)
        // invalid UTF-8
        FileManager.default.createFile(atPath: dir + "/latin1.csv", contents: Data([0x6E, 0x61, 0x6D, 0x65, 0x0A, 0xE9, 0x0A]))
        #expect { try Manifest.load(path: dir + "/latin1.csv") } throws: { "\($0)".contains("not valid UTF-8") }
        // a 50 MB file is refused by its size, without being read
        let big = dir + "/big.csv"
        FileManager.default.createFile(atPath: big, contents: nil)
        #expect(truncate(big, 50 * 1024 * 1024) == 0)
        #expect { try Manifest.load(path: big) } throws: { "\($0)".contains("the limit is 16 MiB") }
    }

    /// Found by the long fuzz run: a non-string mapping key made the YAML library trap (crash).
    @Test(arguments: ["apps: [{name: x, [a]: b}]\n", "{[1]: x}\n", "apps:\n  - ? {a: b}\n    : c\n", "d: &d {name: x}\napps:\n  - <<: *d\n"])
    func yamlThatWouldCrashTheYAMLLibraryIsRefused(_ yaml: String) {
        #expect { try Manifest.parseYAML(yaml, baseDir: "/m") } throws: { "\($0)".contains("not a plain string") || "\($0)".contains("merge key") }
    }

    @Test func odataLiteralsAreEscapedEverywhere() async throws {
        #expect(OData.quote("it's") == "'it''s'")
        #expect(OData.hasTag("a') or (1 eq 1") == "tags/any(t:t eq 'a'') or (1 eq 1')")
        // an app whose name holds a quote is found by its own marker tag, and only it
        let fleet = try await Fleet()
        _ = try await fleet.provisioner.provision(name: "x")
        let tricky = try await fleet.provisioner.provision(name: "x') or startswith(displayName,'")
        var found: [String] = []
        for try await app in fleet.provisioner.graph.applications(filter: OData.hasTag(Provisioner.marker(for: "x') or startswith(displayName,'"))) {
            found.append(app.id)
        }
        #expect(found == [tricky.application.id])
    }

    // MARK: symlinks and owners

    @Test func secretFilesAreNeverReadOrShreddedThroughALink() throws {
        let dir = try Tools.temporaryDirectory("links")
        let target = dir + "/precious"
        try SecureFiles.writeAtomically("do not destroy", to: target)
        symlink(target, dir + "/link")
        #expect(throws: SecureFileError.symbolicLink(path: dir + "/link")) { try SecureFiles.readSecret(dir + "/link") }
        #expect(throws: SecureFileError.symbolicLink(path: dir + "/link")) { try SecureFiles.shred(dir + "/link") }
        #expect(throws: SecureFileError.symbolicLink(path: dir + "/link")) { try SecureFiles.checkPrivate(dir + "/link", expected: 0o600) }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "do not destroy")
        // a file another user owns is not trusted
        let foreign = dir + "/foreign"
        try SecureFiles.writeAtomically("x", to: foreign)
        if geteuid() == 0 {
            chown(foreign, 65534, 65534)
            #expect { try SecureFiles.readSecret(foreign) } throws: { "\($0)".contains("belongs to user 65534") && "\($0)".contains("chown") }
        }
    }

    @Test func anOperatorCanReadTheStatusOfAStoreAnotherUserOwnsButNotItsKeys() async throws {
        guard geteuid() == 0 else { return }  // needs chown
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("foreign-owner")
        let active = try store.journal().active
        for f in ["journal.json", "identity.json", "keys/\(active).cert.pem", "keys/\(active).key.pem"] { chown(store.path + "/" + f, 65534, 65534) }
        let status = try StoreReader.status(path: store.path, policy: RollPolicy(), now: fleet.rig.clock.now())
        #expect(status.activeThumbprint == active, "status reads the journal, which is not a secret")
        #expect { try store.credential(active) } throws: { "\($0)".contains("belongs to user 65534") }
    }

    // MARK: the emulator on a network

    @Test func theEmulatorsDataFileIsPrivate() throws {
        let dir = try Tools.temporaryDirectory("emu-data")
        _ = try DirectoryStore(path: dir + "/new.sqlite")
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/new.sqlite")[.posixPermissions] as! Int) == 0o600)
        FileManager.default.createFile(atPath: dir + "/old.sqlite", contents: nil, attributes: [.posixPermissions: 0o644])
        _ = try DirectoryStore(path: dir + "/old.sqlite")
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/old.sqlite")[.posixPermissions] as! Int) == 0o600)
    }

    @Test func withASecretTheControlAPINeedsTheBearerToken() async throws {
        let rig = try EmulatorRig()
        rig.emulator.controlSecret = "s3cret-token"
        #expect(await rig.request("GET", "/_emulator/settings").status == 401)
        #expect(await rig.request("GET", "/_emulator/settings", headers: ["authorization": "Bearer wrong-token!"]).status == 401)
        #expect(await rig.request("GET", "/_emulator/settings", headers: ["authorization": "Bearer s3cret-token"]).status == 200)
    }
}
