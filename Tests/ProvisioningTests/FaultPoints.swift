import Foundation
import KeyRollPrimitives

/// Names every side effect a run reaches (`rename web.r2.json#1`), and fails the one named
/// `target` with ENOSPC: a full disk there, or the step a crash would stop at.
final class FaultPoints: @unchecked Sendable {
    let lock = NSLock()
    var seen: [String] = []
    var target: String?

    func reach(_ e: SideEffect) throws {
        let name = lock.withLock { () -> String in
            let n = seen.filter { $0.hasPrefix(e.description + "#") }.count + 1
            seen.append("\(e)#\(n)")
            return "\(e)#\(n)"
        }
        if name == target { throw SecureFileError.io(path: "(test fault)", operation: e.kind.rawValue, errno: ENOSPC) }
    }
}
