import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

@Suite(.serialized) struct ProvisionCrashTests {

    @Test
    func aRunKilledMidwayResumesWithoutDuplicatesOrOrphans() async throws {
        try Binaries.require()
        let server = try await ServedEmulator.start(https: true)
        let dir = try Tools.temporaryDirectory("keyroll-provcrash")
        let names = (0..<40).map { String(format: "crash-%02d", $0) }
        try Tools.write("name,tags\n" + names.map { "\($0),env:test" }.joined(separator: "\n") + "\n", to: dir + "/apps.csv")
        let env = ["AZURE_TENANT_ID": server.provisioner.tenantID, "AZURE_CLIENT_ID": server.provisioner.appId,
                   "AZURE_CLIENT_CERTIFICATE_PATH": server.stateDir + "/provisioner.pem", "AZURE_AUTHORITY_HOST": server.baseURL,
                   "KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]
        // start, and SIGKILL once about a quarter is done
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Binaries.keyroll)
        p.arguments = ["provision", dir + "/apps.csv", "--concurrency", "4"]
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let lines = (try? String(contentsOfFile: dir + "/apps.csv.log", encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 12 { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        let partial = try server.emulator.store.counts()["application"] ?? 0
        #expect(partial > 1 && partial < 41, "killed midway: \(partial - 1) apps existed")
        // resume
        let r = try await Tools.run([Binaries.keyroll, "provision", dir + "/apps.csv"], environment: env)
        #expect(r.status == 0, "\(r.stdout) \(r.stderr.suffix(1500))")
        #expect(try server.emulator.store.counts()["application"] == 41, "40 apps + the provisioner, no duplicates")
        for name in names {
            let b = try BootstrapBundle.decode(try SecureFiles.read(dir + "/bundles/\(name).json"))
            let keys = try server.emulator.keyCredentials(appId: b.appId)
            #expect(keys.count == 1, "\(name): \(keys.count) key credentials (an orphaned bootstrap was left behind)")
            #expect(keys.first?.key == (try? b.signingCredential().certificate.der), "\(name): the bundle's certificate is the registered one")
        }
        // and a third run is a no-op
        let again = try await Tools.run([Binaries.keyroll, "provision", dir + "/apps.csv"], environment: env)
        #expect(again.stdout.contains("40 already provisioned"), "\(again.stdout)")
        await server.stop()
    }
}
