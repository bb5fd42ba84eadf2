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

    /// The lean agent's supervisor links the standard library and glibc only: no Foundation, no
    /// event loop, no TLS, no key code. What it links is what it keeps resident between passes.
    @Test func theSupervisorLinksNeitherFoundationNorTheAgent() throws {
        let path = Tools.packageRoot + "/.build/debug/keyroll-supervisor"
        let binary = try Data(contentsOf: URL(fileURLWithPath: path))
        for name in ["Foundation", "NIOPosix", "Hummingbird", "BoringSSL", "EntraCrypto", "KeyRoll.Roller", "CryptoKit"] {
            #expect(binary.range(of: Data(name.utf8)) == nil, "keyroll-supervisor contains \(name)")
        }
        let production = try Data(contentsOf: URL(fileURLWithPath: Binaries.keyroll))
        #expect(production.range(of: Data("Foundation".utf8)) != nil, "keyroll links Foundation (else this test searches for the wrong name)")
        let linked = try Tools.run(["ldd", path]).stdout
        #expect(!linked.contains("Foundation") && !linked.contains("libicu"), "\(linked)")
    }

    /// Every command names itself in its `CommandConfiguration`. Without `commandName:`
    /// swift-argument-parser derives the name with `String(describing: Self.self)` while it
    /// builds the command tree at every start — even for `--version` — and each such call makes
    /// the Swift runtime scan all of the static binary's ~11,000 protocol conformance records
    /// several times: naming the two `cert` subcommands took about 5 % off `keyroll --version`
    /// (docs/benchmarks.md, "Footprint of the production agent").
    @Test(arguments: ["keyroll", "keyroll-lab"])
    func everyCommandNamesItself(tool: String) throws {
        let folder = Tools.packageRoot + "/Sources/" + tool
        var unnamed: [String] = []
        var configurations = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasSuffix(".swift") {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            var rest = text[...]
            while let start = rest.range(of: "CommandConfiguration(") {
                configurations += 1
                // the first argument of the call, on the same line or the next
                let call = rest[start.upperBound...].prefix(200).trimmingCharacters(in: .whitespacesAndNewlines)
                if !call.hasPrefix("commandName:") { unnamed.append("\(file): \(call.prefix(60))") }
                rest = rest[start.upperBound...]
            }
        }
        #expect(configurations > 5, "found \(configurations) CommandConfiguration calls under \(folder): is it the right folder?")
        #expect(unnamed.isEmpty, "commands without commandName: (the name is then derived at every start): \(unnamed.joined(separator: "; "))")
    }
}
