import Foundation
import TestSupport

/// The built executables these tests drive. A missing binary fails the test (it never skips):
/// `swift build` builds both before `swift test` runs.
enum Binaries {
    static let keyroll = Tools.packageRoot + "/.build/debug/keyroll"
    static let lab = Tools.packageRoot + "/.build/debug/keyroll-lab"

    /// Throws, failing the calling test, unless both binaries are built. Also gives every binary
    /// these tests start a real-time policy (``realTimePolicy``) unless a test names its own.
    static func require() throws {
        for path in [keyroll, lab] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ToolError("\(path) is not built: run `swift build` before `swift test` (scripts/test does). Binary-driven tests fail rather than skip.")
        }
        _ = realTimePolicy
    }

    /// These processes run on the real clock: a roll's settle of 1 s instead of 150, and a
    /// registration check every ≤ 5 s instead of 10 minutes. Set as `KEYROLL_POLICY_FILE`, the
    /// variable the commands read when `--policy-file` is not given.
    static let realTimePolicy: String = {
        let path = NSTemporaryDirectory() + "/keyroll-real-time-policy-\(getpid()).json"
        try? #"{"settleSeconds": 1, "registrationCheckSeconds": 5}"#.write(toFile: path, atomically: true, encoding: .utf8)
        setenv("KEYROLL_POLICY_FILE", path, 1)
        return path
    }()
}
