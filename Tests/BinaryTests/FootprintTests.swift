import Foundation
import Testing
import TestSupport

/// The production binary carries nothing of the lab: no emulator, no SQLite, no HTTPS server,
/// no harness. (The lab binary, built from the same tree, must contain them, or the search
/// below would be searching for the wrong names.)
@Suite struct FootprintTests {
    static let labOnly = ["EntraEmulator", "LabHarness", "GRDB", "sqlite3_open", "HummingbirdTLS"]

    @Test func theProductionBinaryLinksNoLabCode() throws {
        try Binaries.require()
        let production = try Data(contentsOf: URL(fileURLWithPath: Binaries.keyroll))
        let lab = try Data(contentsOf: URL(fileURLWithPath: Binaries.lab))
        for name in Self.labOnly {
            let needle = Data(name.utf8)
            #expect(lab.range(of: needle) != nil, "\(name) should be in keyroll-lab (else this test searches for the wrong name)")
            #expect(production.range(of: needle) == nil, "keyroll contains \(name): the production binary links lab code")
        }
        let linked = try Tools.run(["ldd", Binaries.keyroll])
        #expect(!linked.stdout.contains("sqlite"), "keyroll links SQLite:\n\(linked.stdout)")
    }
}
