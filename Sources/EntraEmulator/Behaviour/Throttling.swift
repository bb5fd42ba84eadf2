import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Graph's and Entra's throttling budgets, kept per caller on the emulator's clock: the routes ask
/// before they act and answer 429 with `Retry-After` when a budget is spent.
extension EntraEmulator {

    /// Counts a Graph write by `caller` in `tenant`; returns a 429 when the budget is spent.
    func throttleWrite(caller: String, tenant: String) -> GraphError? {
        let t = settings.throttling
        guard t.enabled else { return nil }
        return throttle(log: \.writeLog, key: "\(caller)/\(tenant)", limit: t.writesPerWindow, window: t.writeWindow,
                        scope: "Tenant_Application/Write/\(caller)/\(tenant)", information: "WriteLimitExceeded")
    }

    /// Counts a `$select=keyCredentials` read on applications in `tenant` (150/min per tenant).
    func throttleKeyCredentialSelect(caller: String, tenant: String) -> GraphError? {
        let t = settings.throttling
        guard t.enabled else { return nil }
        return throttle(log: \.selectLog, key: tenant, limit: t.keyCredentialSelectsPerMinute, window: 60,
                        scope: "Tenant/Read/\(caller)/\(tenant)", information: "ResourceUnitLimitExceeded")
    }

    /// Counts a read of the sign-in log or a usage report by `caller` in `tenant` (Graph's identity
    /// and access reports budget: 5 requests per 10 s per app per tenant).
    func throttleAuditLog(caller: String, tenant: String) -> GraphError? {
        let t = settings.throttling
        guard t.enabled, t.auditLogRequestsPerWindow > 0 else { return nil }
        return throttle(log: \.auditLog, key: "\(caller)/\(tenant)", limit: t.auditLogRequestsPerWindow, window: t.auditLogWindow,
                        scope: "Tenant_Application/Read/\(caller)/\(tenant)", information: "ResourceUnitLimitExceeded")
    }

    func throttleToken(client: String) -> Double? {
        let t = settings.throttling
        guard t.enabled, t.tokenRequestsPer10s > 0 else { return nil }
        let now = self.now
        return state.withLock { s -> Double? in
            var log = s.tokenLog[client, default: []].filter { now.timeIntervalSince($0) < 10 }
            defer { s.tokenLog[client] = log }
            if log.count >= t.tokenRequestsPer10s { return max(0.1, 10 - now.timeIntervalSince(log[0])) }
            log.append(now)
            return nil
        }
    }

    func throttle(log path: WritableKeyPath<MutableState, [String: [Date]]>, key: String, limit: Int, window: TimeInterval,
                          scope: String, information: String) -> GraphError? {
        let now = self.now
        let retry: Double? = state.withLock { s in
            var log = s[keyPath: path][key, default: []]
            log.removeAll { now.timeIntervalSince($0) >= window }
            defer { s[keyPath: path][key] = log }
            if log.count >= limit { return max(0.001, window - now.timeIntervalSince(log[0])) }
            log.append(now)
            return nil
        }
        guard let retry else { return nil }
        bump("graph_throttled_total")
        return GraphError(429, "TooManyRequests", "Too many requests. Please retry after the time in the Retry-After header.",
                          headers: [("Retry-After", formatSeconds(retry)), ("x-ms-throttle-scope", scope),
                                    ("x-ms-throttle-information", information)])
    }

    /// A random propagation delay from the settings' range (seeded).
    func propagationDelay() -> TimeInterval {
        state.withLock { s in
            let lo = s.settings.propagationDelayMin, hi = max(lo, s.settings.propagationDelayMax)
            guard hi > lo else { return lo }
            return lo + (hi - lo) * Double(s.rng.next() % 1_000_001) / 1_000_000
        }
    }
}
