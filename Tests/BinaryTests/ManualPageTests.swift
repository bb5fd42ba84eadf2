import Foundation
import Testing
import TestSupport

/// The manual pages in deploy/man/ are generated from the commands' own help (swift-argument-parser's
/// generate-manual, by scripts/man-pages) and committed, so that packaging needs no plugin run. They
/// must not fall behind the binary: every displayed command and option of the built binary, as its
/// `--experimental-dump-help` describes it, has its entry in the page under its own command, the page
/// names no command or option the binary lacks, and hidden commands have none. (Help text that changed
/// without a command or option changing is not caught: regenerate with scripts/man-pages.)
@Suite struct ManualPageTests {
    /// Long option names per command path ("keyroll import"), as the binary's help dump lists them.
    /// `displayed` leaves out what the help hides; `all` keeps it. Hidden commands are listed apart.
    static func dumped(from binary: String) throws -> (displayed: [String: Set<String>], all: [String: Set<String>], hidden: [String]) {
        let dump = try Tools.run([binary, "--experimental-dump-help"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        var displayed: [String: Set<String>] = [:], all: [String: Set<String>] = [:], hidden: [String] = []
        func walk(_ command: [String: Any], path: [String]) {
            let name = command["commandName"] as? String ?? ""
            if command["shouldDisplay"] as? Bool == false { hidden.append(name); return }
            let here = (path + [name]).joined(separator: " ")
            displayed[here, default: []] = []
            all[here, default: []] = []
            for argument in command["arguments"] as? [[String: Any]] ?? [] {
                for n in argument["names"] as? [[String: Any]] ?? [] where n["kind"] as? String == "long" {
                    guard let long = n["name"] as? String else { continue }
                    all[here, default: []].insert(long)
                    if argument["shouldDisplay"] as? Bool != false { displayed[here, default: []].insert(long) }
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub, path: path + [name]) }
        }
        walk(try #require(json["command"] as? [String: Any]), path: [])
        return (displayed, all, hidden)
    }

    /// Long option names per command path, as the mdoc page lists them: each `.It Em NAME` opens a
    /// subcommand whose options are the `.It Fl` entries of the next `.Bl` list, at that list's depth.
    static func documented(in page: String, root: String) -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        var owner: [Int: [String]] = [0: [root]]
        var depth = 0
        var pending: [String]?
        /// A command the page names is recorded even when it has no option.
        func mention(_ path: [String]) { result[path.joined(separator: " "), default: []].formUnion([]) }
        for line in page.split(separator: "\n").map(String.init) {
            if line.hasPrefix(".Bl") {
                depth += 1
                let list = pending ?? owner[depth - 1] ?? [root]
                owner[depth] = list
                pending = nil
                mention(list)
            } else if line == ".El" {
                depth -= 1
            } else if line.hasPrefix(".It Em ") {
                let command = (owner[depth] ?? [root]) + [String(line.dropFirst(7))]
                pending = command
                mention(command)
            } else if line.hasPrefix(".It Fl ") {
                let path = (owner[depth] ?? [root]).joined(separator: " ")
                for token in line.split(separator: " ") where token.hasPrefix("-") && token.count > 1 {
                    result[path, default: []].insert(String(token.dropFirst()))
                }
            }
        }
        return result
    }

    @Test(arguments: ["keyroll", "keyroll-lab"])
    func theCommittedPageDescribesEveryCommandAndOptionAndNothingElse(tool: String) throws {
        try Binaries.require()
        let binary = tool == "keyroll" ? Binaries.keyroll : Binaries.lab
        let page = try String(contentsOfFile: Tools.packageRoot + "/deploy/man/\(tool).1", encoding: .utf8)
        let (displayed, all, hidden) = try Self.dumped(from: binary)
        let documented = Self.documented(in: page, root: tool)
        #expect(displayed.count > 5 && documented.count > 5, "\(displayed.count) commands in the help, \(documented.count) in the page: is it the right binary?")
        let ignored: Set<String> = ["help", "version"]  // every command has them; the page lists them once per list
        var stale: [String] = []
        for (command, options) in displayed.sorted(by: { $0.key < $1.key }) {
            guard let onPage = documented[command] else { stale.append("no entry for '\(command)'"); continue }
            for option in options.subtracting(ignored).subtracting(onPage).sorted() { stale.append("'\(command) --\(option)' is missing") }
            for option in onPage.subtracting(ignored).subtracting(all[command] ?? []).sorted() { stale.append("'\(command) --\(option)' is gone from the binary") }
        }
        for command in documented.keys.sorted() where displayed[command] == nil {
            stale.append("'\(command)' is no command of the binary")
        }
        #expect(stale.isEmpty, "deploy/man/\(tool).1 is stale (\(stale.prefix(8).joined(separator: "; "))): run scripts/man-pages and commit the result")
        for name in hidden {
            #expect(!page.split(separator: "\n").contains(".It Em \(name)"), "deploy/man/\(tool).1 documents the hidden command \(name)")
        }
        #expect(!page.split(separator: "\n", omittingEmptySubsequences: false).dropLast().contains(""), "deploy/man/\(tool).1 has a blank line (an mdoc error): run scripts/man-pages")
    }
}
