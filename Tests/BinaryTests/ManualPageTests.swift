import Foundation
import Testing
import TestSupport

/// The manual pages in deploy/man/ are generated from the commands' own help (swift-argument-parser's
/// generate-manual, by scripts/man-pages) and committed, so that packaging needs no plugin run. They
/// must not fall behind the binary: every displayed command and option of the built binary, as its
/// `--experimental-dump-help` describes it, has its entry in the page, and hidden commands have none.
@Suite struct ManualPageTests {
    struct Entry: Equatable { let command: String; let option: String? }

    /// Every displayed (sub)command path and long option name in the binary's help dump.
    static func entries(of binary: String) throws -> (shown: [Entry], hidden: [String]) {
        let dump = try Tools.run([binary, "--experimental-dump-help"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        var shown: [Entry] = [], hidden: [String] = []
        func walk(_ command: [String: Any], path: [String]) {
            let name = command["commandName"] as? String ?? ""
            if command["shouldDisplay"] as? Bool == false { hidden.append(name); return }
            let here = path + [name]
            shown.append(Entry(command: here.joined(separator: " "), option: nil))
            for argument in command["arguments"] as? [[String: Any]] ?? [] where argument["shouldDisplay"] as? Bool != false {
                for n in argument["names"] as? [[String: Any]] ?? [] where n["kind"] as? String == "long" {
                    shown.append(Entry(command: here.joined(separator: " "), option: n["name"] as? String))
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub, path: here) }
        }
        walk(try #require(json["command"] as? [String: Any]), path: [])
        return (shown, hidden)
    }

    @Test(arguments: ["keyroll", "keyroll-lab"])
    func theCommittedPageDescribesEveryCommandAndOption(tool: String) throws {
        try Binaries.require()
        let binary = tool == "keyroll" ? Binaries.keyroll : Binaries.lab
        let page = try String(contentsOfFile: Tools.packageRoot + "/deploy/man/\(tool).1", encoding: .utf8)
        let lines = Set(page.split(separator: "\n").map(String.init))
        let (shown, hidden) = try Self.entries(of: binary)
        #expect(shown.count > 20, "the help dump lists \(shown.count) entries: is it the right binary?")
        var missing: [String] = []
        for entry in shown {
            let words = entry.command.split(separator: " ")
            if let option = entry.option {
                if !lines.contains(where: { $0.hasPrefix(".It Fl") && ($0.contains("-\(option) ") || $0.hasSuffix("-\(option)")) }) {
                    missing.append("\(entry.command) --\(option)")
                }
            } else if words.count > 1, !lines.contains(".It Em \(words.last!)") {
                missing.append(entry.command)
            }
        }
        #expect(missing.isEmpty, "deploy/man/\(tool).1 is stale (it lacks \(missing.prefix(10).joined(separator: ", "))): run scripts/man-pages and commit the result")
        for name in hidden {
            #expect(!lines.contains(".It Em \(name)"), "deploy/man/\(tool).1 documents the hidden command \(name)")
        }
        #expect(!lines.contains(""), "deploy/man/\(tool).1 has a blank line (an mdoc error): run scripts/man-pages")
    }
}
