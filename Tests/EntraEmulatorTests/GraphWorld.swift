import EntraCrypto
import EntraEmulator
import Foundation
import LabHarness
import TestSupport

/// A tenant with one role-less app (holding a 30-day certificate) and a provisioner with
/// Application.ReadWrite.All, each with a Graph token: the starting point of the Graph tests.
struct GraphWorld {
    let rig: EmulatorRig
    let app: EntraEmulator.Registration
    let boot: SigningCredential
    let appToken: String
    let adminCred: SigningCredential
    let admin: EntraEmulator.Registration
    let adminToken: String

    init(_ settings: EmulatorSettings = .init(), bootDays: Double = 2) async throws {
        rig = try EmulatorRig(settings: settings)
        boot = try rig.credential("boot", days: bootDays)
        app = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "app-1", certificates: [boot.certificate])
        adminCred = try rig.credential("admin", days: 30)
        admin = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "provisioner", roles: [.applicationReadWriteAll], certificates: [adminCred.certificate])
        appToken = try await rig.token(clientID: app.appId, credential: boot)
        adminToken = try await rig.token(clientID: admin.appId, credential: adminCred)
    }
}
