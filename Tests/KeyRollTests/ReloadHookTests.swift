import EntraClient
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import Testing
import TestSupport

/// After each switch the agent tells the application: a command (with KEYROLL_CERTIFICATE_PATH) or a signal.
@Suite struct ReloadHookTests {
    @Test func commandRunsAfterTheSwitchWithThePublishedPath() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("hooked")
        let out = fleet.root + "/hook.out"
        let roller = try Roller(store: store, transport: fleet.transport, clock: fleet.rig.clock, sleeper: ClockAdvancingSleeper(clock: fleet.rig.clock),
                                reloadHook: .command(["/bin/sh", "-c", "echo \"$KEYROLL_CERTIFICATE_PATH $KEYROLL_APP_ID\" > '\(out)'"]))
        #expect(!FileManager.default.fileExists(atPath: out))
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("no roll"); return }
        let text = try String(contentsOfFile: out, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(text == "\(store.currentPEMPath) \(roller.identity.appId)")
    }
}
