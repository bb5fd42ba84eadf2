import Foundation
import TestSupport

/// What the tests that drive a long-running process (the lean agent, its supervisor) share: its
/// loopback pages and its graceful stop.
enum ServedProcess {
    /// A loopback page, fetched with curl: the status code and the body.
    static func get(port: Int, _ path: String) async throws -> (status: String, body: String) {
        let out = try await Tools.run(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]).stdout
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    /// SIGTERM, then up to 30 s for it to exit: its exit status, nil if it is still running.
    static func stop(_ process: Process) -> Int32? {
        process.terminate()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline { usleep(50_000) }
        return process.isRunning ? nil : process.terminationStatus
    }
}
