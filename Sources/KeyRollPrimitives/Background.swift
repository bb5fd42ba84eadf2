import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// CPU time of the calling thread: what a piece of work cost, whatever else the machine was doing.
public enum ThreadCPUTime {
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// `work`'s result and the seconds of CPU this thread spent on it.
    public static func measure<T>(_ work: () throws -> T) rethrows -> (T, Double) {
        let start = now()
        let result = try work()
        return (result, now() - start)
    }
}

/// CPU-heavy work (RSA key generation) off Swift's cooperative pool, which has only as many threads
/// as cores: a 4096-bit keygen can block one for seconds.
public enum Background {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            DispatchQueue.global(qos: .utility).async { cont.resume(with: Swift.Result { try work() }) }
        }
    }
}
