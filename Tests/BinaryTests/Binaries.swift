import Foundation
import TestSupport

/// The built executables these tests drive. A missing binary fails the test (it never skips):
/// `swift build` builds both before `swift test` runs.
enum Binaries {
    static let keyroll = Tools.packageRoot + "/.build/debug/keyroll"
    static let lab = Tools.packageRoot + "/.build/debug/keyroll-lab"

    /// Throws, failing the calling test, unless both binaries are built.
    static func require() throws {
        for path in [keyroll, lab] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ToolError("\(path) is not built: run `swift build` before `swift test` (scripts/test does). Binary-driven tests fail rather than skip.")
        }
    }
}
