import EntraCrypto
import Foundation
import KeyRoll
import LabHarness
import Testing
import TestSupport

/// An operator who hardens the key files to 0400 (owner read-only) must not stop the agent: the
/// sweep before every roll destroys keys the journal no longer lists, and a key it could not
/// destroy used to stop every roll and every start with "Permission denied" until the certificate
/// ran out. Run as an unprivileged user (root ignores file modes, so as root this would prove
/// nothing).
@Suite struct ReadOnlyKeyTests {
    @Test func aReadOnlyKeyTheJournalNoLongerListsIsDestroyedAndTheRollGoesOn() async throws {
        try Binaries.require()
        let server = try await ServedEmulator.start(https: true)
        defer { Task { await server.stop() } }
        // a folder the unprivileged user can reach: 0755 down to the store, which it owns
        let dir = NSTemporaryDirectory() + "/keyroll-read-only-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = dir + "/ca.pem", policy = dir + "/policy.json"
        try FileManager.default.copyItem(atPath: server.stateDir + "/ca.pem", toPath: ca)
        try FileManager.default.copyItem(atPath: Binaries.realTimePolicy, toPath: policy)
        var env = ["AZURE_TENANT_ID": server.provisioner.tenantID, "AZURE_CLIENT_ID": server.provisioner.appId,
                   "AZURE_CLIENT_CERTIFICATE_PATH": server.stateDir + "/provisioner.pem", "AZURE_AUTHORITY_HOST": server.baseURL,
                   "KEYROLL_CA_FILE": ca, "KEYROLL_POLICY_FILE": policy, "KEYROLL_STORE": "", "HOME": dir]
        let csv = dir + "/one.csv"
        try Tools.write("name\nread-only-keys\n", to: csv)
        let provisioned = try await Tools.run([Binaries.keyroll, "provision", csv], environment: env)
        #expect(provisioned.status == 0, "\(provisioned.stderr.suffix(500))")
        let store = dir + "/store"
        let imported = try await Tools.run([Binaries.keyroll, "import", "--bundle", dir + "/bundles/read-only-keys.json", "--store", store], environment: env)
        try #require(imported.status == 0, "\(imported.stderr.suffix(500))")
        // a key the journal does not list (what a released key is until the sweep), made read-only
        let active = try CredentialStore(path: store).journal().active
        let orphan = store + "/keys/" + String(repeating: "AB", count: 20) + ".key.pem"
        try FileManager.default.copyItem(atPath: store + "/keys/\(active).key.pem", toPath: orphan)
        #expect(chmod(orphan, 0o400) == 0)
        for path in [policy, ca] { #expect(chmod(path, 0o644) == 0) }
        let chowned = try await Tools.run(["/bin/chown", "-R", "65534:65534", store])
        try #require(chowned.status == 0, "\(chowned.stderr)")

        env.removeValue(forKey: "AZURE_CLIENT_CERTIFICATE_PATH")  // the agent needs no provisioner
        let rolled = try await Tools.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", Binaries.keyroll, "roll", "--store", store],
                                         environment: env)
        #expect(rolled.status == 0, "the roll as the store's unprivileged owner failed: \((rolled.stderr + rolled.stdout).suffix(800))")
        #expect(!FileManager.default.fileExists(atPath: orphan), "the read-only key the journal does not list is still on disk")
        let journal = try CredentialStore(path: store).journal()
        #expect(journal.active != active && journal.roll == nil, "the roll did not finish: active \(journal.active), roll \(String(describing: journal.roll))")
    }
}
