import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives

/// The demo's application without a key: it gets Graph tokens from the agent's managed-identity
/// endpoint (as an Azure SDK would, retrying a 503 up to 3 times) and reads its own application
/// object with them (it holds Application.Read.All for its own work), again and again while its key
/// rolls underneath.
struct KeylessReader {
    let endpoint: TokenEndpoint
    let secret: String
    let emulator: EntraEmulator
    let objectID: String
    let base: String

    struct Tally {
        var reads = 0
        var duringRoll = 0
        var failures: [String] = []
    }

    /// One Graph read through the endpoint: "200", or what went wrong.
    func read() async -> String {
        var answer: (status: Int, body: [UInt8]) = (0, [])
        for _ in 0..<4 {
            answer = await endpoint.respond(method: "GET", query: [("api-version", "2019-08-01"), ("resource", "https://graph.microsoft.com")],
                                            headers: [("X-IDENTITY-HEADER", secret), ("Metadata", "true")])
            if answer.status != 503 { break }
        }
        guard answer.status == 200, let token = (try? JSONValue.parse(answer.body))?["access_token"]?.stringValue else {
            return "token endpoint \(answer.status)"
        }
        let graph = await emulator.handle(EmulatorRequest(method: "GET", target: "/v1.0/applications/\(objectID)",
                                                          headers: ["authorization": "Bearer \(token)"], baseURL: base))
        return graph.status == 200 ? "200" : "Graph \(graph.status)"
    }

    /// Rolls `roller` while reading Graph through the endpoint, from the moment the roll starts
    /// until it is over.
    func roll(_ roller: Roller, reason: String) async throws -> (RollOutcome, Tally) {
        final class Progress: @unchecked Sendable {
            let lock = NSLock()
            var started = false, finished = false
            var state: (Bool, Bool) { lock.withLock { (started, finished) } }
        }
        let progress = Progress()
        let rolling = Task {
            progress.lock.withLock { progress.started = true }
            defer { progress.lock.withLock { progress.finished = true } }
            return try await roller.roll(reason: reason)
        }
        var tally = Tally()
        while true {
            let (started, finished) = progress.state
            if finished { break }
            if !started { await Task.yield(); continue }
            let r = await read()
            tally.reads += 1
            if !progress.state.1 { tally.duringRoll += 1 }
            if r != "200" { tally.failures.append(r) }
            await Task.yield()
        }
        // and once more with the new key in place
        let after = await read()
        tally.reads += 1
        if after != "200" { tally.failures.append(after) }
        return (try await rolling.value, tally)
    }
}
