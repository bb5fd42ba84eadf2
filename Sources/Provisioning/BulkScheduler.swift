import EntraCrypto
import Foundation

/// Concurrency that adapts to Graph's throttling: additive increase on success, multiplicative
/// decrease on a 429 (AIMD), so bulk work runs as fast as the tenant's budget allows.
public actor AdaptiveLimit {
    public private(set) var limit: Double
    let minimum: Double, maximum: Double
    private var inFlight = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var lastDecrease = Date.distantPast
    public private(set) var throttleEvents = 0

    public init(start: Int = 4, minimum: Int = 1, maximum: Int = 32) {
        self.limit = Double(start)
        self.minimum = Double(minimum)
        self.maximum = Double(maximum)
    }

    public func acquire() async {
        if Double(inFlight) < limit.rounded(.down) { inFlight += 1; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    public func release(succeeded: Bool) {
        if succeeded { limit = min(maximum, limit + 1 / max(1, limit)) }
        inFlight -= 1
        wake()
    }

    /// A 429 was seen: halve (at most once a second, so one burst counts once).
    public func throttled() {
        throttleEvents += 1
        let now = Date()
        guard now.timeIntervalSince(lastDecrease) > 1 else { return }
        lastDecrease = now
        limit = max(minimum, limit / 2)
    }

    private func wake() {
        while Double(inFlight) < limit.rounded(.down), !waiters.isEmpty {
            inFlight += 1
            waiters.removeFirst().resume()
        }
    }
}

/// Progress of a bulk run: a bar on a terminal, a line every 10 s (or 10 %) otherwise.
public final class ProgressReporter: @unchecked Sendable {
    let title: String
    let total: Int
    let tty: Bool
    let started = Date()
    private let lock = NSLock()
    private var done = 0, failed = 0, lastPrint = Date.distantPast, lastDecile = -1
    let output: @Sendable (String) -> Void

    public init(title: String, total: Int, tty: Bool = isatty(1) != 0, output: @escaping @Sendable (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) {
        self.title = title
        self.total = total
        self.tty = tty
        self.output = output
    }

    public func step(failed f: Bool = false) {
        let (d, fl, line) = lock.withLock { () -> (Int, Int, String?) in
            done += 1
            if f { failed += 1 }
            let now = Date()
            let decile = total == 0 ? 10 : done * 10 / total
            let due = tty ? now.timeIntervalSince(lastPrint) > 0.2 : (now.timeIntervalSince(lastPrint) > 10 || decile != lastDecile)
            guard due || done == total else { return (done, failed, nil) }
            lastPrint = now
            lastDecile = decile
            return (done, failed, render(done: done, failed: failed, now: now))
        }
        _ = (d, fl)
        if let line { output(line) }
    }

    func render(done: Int, failed: Int, now: Date) -> String {
        let elapsed = max(0.001, now.timeIntervalSince(started))
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let stats = "\(done)/\(total)  \(failed) failed  \(String(format: "%.1f", rate))/s  ETA \(Int(eta.rounded()))s"
        if tty {
            let width = 30, filled = total == 0 ? width : done * width / total
            return "\r\(title) [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + stats + (done == total ? "\n" : "")
        }
        return "\(title): \(stats)\n"
    }

    public var summary: (done: Int, failed: Int, seconds: Double) { lock.withLock { (done, failed, Date().timeIntervalSince(started)) } }
}

/// Runs `items` (already in priority order) through `job` under an ``AdaptiveLimit``.
public enum BulkRunner {
    public static func run<Item: Sendable, Output: Sendable>(_ items: [Item], limit: AdaptiveLimit, progress: ProgressReporter?,
                                                              job: @escaping @Sendable (Item) async throws -> Output) async -> [Result<Output, Error>] {
        await withTaskGroup(of: (Int, Result<Output, Error>).self) { group in
            for (i, item) in items.enumerated() {
                await limit.acquire()
                group.addTask {
                    let r: Result<Output, Error>
                    do { r = .success(try await job(item)) } catch { r = .failure(error) }
                    var ok = true
                    if case .failure = r { ok = false }
                    await limit.release(succeeded: ok)
                    progress?.step(failed: !ok)
                    return (i, r)
                }
            }
            var out = [Result<Output, Error>?](repeating: nil, count: items.count)
            for await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
    }
}
