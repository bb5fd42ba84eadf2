/// The supervisor's three read-only pages — `/metrics`, `/healthz`, `/readyz` — as pure functions
/// from a request head and the files the last pass wrote to the bytes of an answer.
///
/// It is deliberately not a general HTTP server: one request per connection (`Connection: close`),
/// GET or HEAD only, a head of at most ``maximumHeadBytes``, no body read. The agent's resident
/// process serves the same pages with Hummingbird; the supervisor does not link it, because an event
/// loop and its router alone keep about 10 MiB of code resident, most of the lean agent's budget.
public enum HealthServer {
    /// The longest request head read; a longer one is answered 431 and closed.
    public static let maximumHeadBytes = 8192
    /// The largest answer file served (a fleet host's exposition is tens of KiB).
    public static let maximumFileBytes = 16 << 20

    public enum Page: String, CaseIterable, Sendable {
        case metrics, healthz, readyz
        /// The file a pass writes the page to, in the state folder.
        public var fileName: String { rawValue + ".http" }
    }

    public enum Request: Equatable, Sendable {
        case page(Page, headOnly: Bool)
        case notFound
        case methodNotAllowed
        case badRequest
    }

    /// The end of the head (the index after `\r\n\r\n`), or nil while it is incomplete.
    public static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 3..<bytes.count where bytes[i] == 10 && bytes[i - 1] == 13 && bytes[i - 2] == 10 && bytes[i - 3] == 13 { return i + 1 }
        return nil
    }

    /// The request line of a complete head: `METHOD SP TARGET SP HTTP/1.x`.
    public static func parse(_ head: [UInt8]) -> Request {
        guard let lineEnd = head.firstIndex(of: 13) else { return .badRequest }
        let parts = head[..<lineEnd].split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .badRequest }
        let method = String(decoding: parts[0], as: UTF8.self), target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version == "HTTP/1.1" || version == "HTTP/1.0", target.hasPrefix("/") else { return .badRequest }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        guard let page = Page(rawValue: String(path.dropFirst())) else { return .notFound }
        switch method {
        case "GET": return .page(page, headOnly: false)
        case "HEAD": return .page(page, headOnly: true)
        default: return .methodNotAllowed
        }
    }

    /// A page file: `STATUS CONTENT-TYPE\n` then the body. Nil when malformed.
    public static func parseFile(_ bytes: [UInt8]) -> (status: Int, contentType: String, body: ArraySlice<UInt8>)? {
        guard let nl = bytes.firstIndex(of: 10) else { return nil }
        let first = String(decoding: bytes[..<nl], as: UTF8.self)
        guard let space = first.firstIndex(of: " "), let status = Int(first[..<space]), (200...599).contains(status) else { return nil }
        let type = String(first[first.index(after: space)...])
        guard !type.isEmpty, type.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return nil }
        return (status, type, bytes[(nl + 1)...])
    }

    /// A page file's content.
    public static func file(status: Int, contentType: String, body: String) -> String { "\(status) \(contentType)\n" + body }

    /// The answer to a request, given the page's file (nil: no pass has written it yet, or the last
    /// pass failed) and the
    /// supervisor's own metrics (appended to `/metrics`).
    public static func answer(_ request: Request, file: (Page) -> [UInt8]?, supervisorMetrics: String) -> [UInt8] {
        switch request {
        case .badRequest: return response(400, "text/plain; charset=utf-8", Array("bad request\n".utf8))
        case .notFound: return response(404, "text/plain; charset=utf-8", Array("not found: the agent serves /metrics, /healthz and /readyz\n".utf8))
        case .methodNotAllowed: return response(405, "text/plain; charset=utf-8", Array("only GET and HEAD\n".utf8), extra: "Allow: GET, HEAD\r\n")
        case .page(let page, let headOnly):
            var status: Int, type: String, body: [UInt8]
            if let bytes = file(page), let parsed = parseFile(bytes) {
                (status, type, body) = (parsed.status, parsed.contentType, Array(parsed.body))
            } else {
                switch page {
                case .metrics: (status, type, body) = (200, "text/plain; version=0.0.4; charset=utf-8", [])
                case .healthz: (status, type, body) = (503, "application/json", Array(#"{"healthy":false,"identities":[],"errors":{"agent":"no pass has ended well yet, or the last one failed: see the agent's log and keyroll_agent_consecutive_pass_failures"}}"#.utf8))
                case .readyz: (status, type, body) = (503, "text/plain; charset=utf-8", Array("reconciling\n".utf8))
                }
            }
            if page == .metrics { body += Array(supervisorMetrics.utf8) }
            return response(status, type, body, headOnly: headOnly)
        }
    }

    static func response(_ status: Int, _ type: String, _ body: [UInt8], extra: String = "", headOnly: Bool = false) -> [UInt8] {
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large", 503: "Service Unavailable"][status] ?? "Status"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nCache-Control: no-store\r\n\(extra)Connection: close\r\nServer: keyroll-supervisor\r\n\r\n"
        return Array(head.utf8) + (headOnly ? [] : body)
    }

    /// The answer to a head longer than ``maximumHeadBytes``.
    public static let tooLarge = response(431, "text/plain; charset=utf-8", Array("request head too large\n".utf8))
}
