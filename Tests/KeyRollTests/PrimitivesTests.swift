import Foundation
import KeyRollPrimitives
import Testing
import TestSupport

@Suite struct PrimitivesTests {
    @Test func backoffDoublesToItsCapWithOrWithoutJitter() {
        // the roller's propagation waits and the agent's failure waits, as they were before one formula served both
        #expect((1...6).map { Backoff(base: 2, cap: 30).delay(attempt: $0) } == [2, 4, 8, 16, 30, 30])
        #expect((1...8).map { Backoff(base: 60, cap: 3600).delay(attempt: $0) } == [60, 120, 240, 480, 960, 1920, 3600, 3600])
        let jittered = Backoff(base: 0.5, cap: 30, jitter: .full)
        #expect(jittered.delay(attempt: 3, random: 0.5) == 1.0)
        #expect(jittered.delay(attempt: 40, random: 1) == 30)
        #expect(jittered.delay(attempt: 1, random: 7) == 0.5, "random is clamped to 0…1")
        #expect(Backoff(base: 1, cap: 10).delay(attempt: Int.max) == 10, "no overflow at huge attempt counts")
    }

    /// `keyroll rebootstrap --out bundle.json` names a file in the current folder: its folder must
    /// be checked like any other (it failed with "mkdir  failed" before).
    @Test func aBareFileNameLivesInTheCurrentFolderWhichMustBePrivate() throws {
        let dir = try Tools.temporaryDirectory("keyroll-cwd")
        let open = dir + "/open", closed = dir + "/closed"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try FileManager.default.createDirectory(atPath: closed, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let before = FileManager.default.currentDirectoryPath
        defer { FileManager.default.changeCurrentDirectoryPath(before) }
        FileManager.default.changeCurrentDirectoryPath(closed)
        #expect(throws: Never.self) { try SecureFiles.ensurePrivateDirectory(("bundle.json" as NSString).deletingLastPathComponent) }
        FileManager.default.changeCurrentDirectoryPath(open)
        #expect(throws: SecureFileError.self, "a bundle's folder readable by others is refused") {
            try SecureFiles.ensurePrivateDirectory(("bundle.json" as NSString).deletingLastPathComponent)
        }
    }

    @Test func splitMix64MatchesTheReferenceSequence() {
        // Vigna's reference implementation, seed 0
        var r = SplitMix64(seed: 0)
        #expect([r.next(), r.next(), r.next()] == [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        var u = SplitMix64(seed: 42)
        for _ in 0..<1000 { let x = u.unit(); #expect(x >= 0 && x < 1) }
    }

    @Test func aJSONLinesFileClosesATornLineBeforeAppending() throws {
        let dir = try Tools.temporaryDirectory("keyroll-jsonl")
        let path = dir + "/log.jsonl"
        try JSONLinesFile.append(Array(#"{"n":1}"#.utf8), to: path)
        // a crash tore the next line mid-write
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.seekToEnd()
        try h.write(contentsOf: Data(#"{"n":2,"tor"#.utf8))
        try h.close()
        let file = try JSONLinesFile(path: path)
        try file.append(Array(#"{"n":3}"#.utf8))
        let lines = JSONLinesFile.lines(at: path).map { String(decoding: $0, as: UTF8.self) }
        #expect(lines == [#"{"n":1}"#, #"{"n":2,"tor"#, #"{"n":3}"#], "the torn line stays alone; the new one is whole")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func aJSONLinesFileReportsEachWriteAndSyncToItsHook() throws {
        let dir = try Tools.temporaryDirectory("keyroll-jsonl-hook")
        final class Seen: @unchecked Sendable { var names: [String] = [] }
        let seen = Seen()
        try JSONLinesFile.append(Array("{}".utf8), to: dir + "/audit.jsonl", hook: SideEffectHook { seen.names.append($0.description) })
        #expect(seen.names == ["create audit.jsonl", "write audit.jsonl", "fsync audit.jsonl"])
        struct Full: Error {}
        #expect(throws: Full.self) {
            try JSONLinesFile.append(Array("{}".utf8), to: dir + "/audit.jsonl", hook: SideEffectHook { if $0.kind == .fsync { throw Full() } })
        }
    }
}
