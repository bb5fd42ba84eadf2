import EntraClient
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The packaged token endpoint: a privileged loopback port that PID 1 binds and passes to the agent
/// (socket activation, `deploy/systemd/keyroll-agent.socket`). `systemd-socket-activate` plays
/// PID 1 here: it binds, and starts the agent when the first request arrives, as systemd does.
@Suite(.serialized) struct TokenEndpointSocketTests {
    @Test func aPassedPrivilegedSocketServesTokensAndNoNeighbourCanBindIt() async throws {
        try Binaries.require()
        try #require(getuid() == 0, "this test binds a privileged port as PID 1 would: run it as root (CI does)")
        let server = try await ServedEmulator.start(https: true)
        defer { Task { await server.stop() } }
        let root = try Tools.temporaryDirectory("keyroll-socket")
        let store = try await Binaries.identityWithTokenEndpoint(server, name: "activated", in: root)
        let port = try #require(Self.freePrivilegedPort(), "no free loopback port below 1024")

        // an unprivileged neighbour cannot bind the port, whether the agent runs or not
        let squat = try await Tools.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                                         "import socket; socket.socket().bind(('127.0.0.1', \(port)))"])
        #expect(squat.status != 0 && squat.stderr.contains("Permission denied"), "nobody bound 127.0.0.1:\(port): \(squat.stderr.suffix(300))")

        // the reload hook records what a child of the agent inherits
        let hookOut = root + "/hook.txt"
        let hook = root + "/hook.sh"
        try Tools.write("#!/bin/sh\n{ env; ls -l /proc/self/fd/; echo TCP-TABLE; cat /proc/net/tcp /proc/net/tcp6; } > \(hookOut).tmp 2>&1; mv \(hookOut).tmp \(hookOut)\n", to: hook)
        chmod(hook, 0o700)
        let log = root + "/agent.log"
        // a second address under the same name, as the packaged unit holds the port of earlier versions
        let transition = try #require(Self.freeUnprivilegedPort())
        let agent = try Binaries.start(["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:\(port)", "-l", "127.0.0.1:\(transition)",
                                        "--fdname=token-endpoint:token-endpoint",
                                        "-E", "KEYROLL_CA_FILE=\(server.stateDir)/ca.pem", "-E", "KEYROLL_POLICY_FILE=\(Binaries.realTimePolicy)", "-E", "KEYROLL_LOG_FORMAT=json",
                                        // no port of its own: a token can only come through the passed socket
                                        Binaries.keyroll, "agent", "--store", store.path, "--metrics-port", "-1", "--token-endpoint-port", "-1", "--reload-command", hook],
                                       log: log)
        defer { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }

        // the first request starts the agent, which answers it on the passed socket (asked from this
        // process: a subprocess here would race the agent's for the test runner's SIGCHLD handling)
        let secret = try store.tokenEndpointSecret()
        let client = try AsyncHTTPTransport()
        var answer: HTTPResponseMessage?
        let until = Date().addingTimeInterval(90)
        while answer?.status != 200, Date() < until {
            answer = try? await client.send(.init(method: "GET", url: "http://127.0.0.1:\(port)/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com",
                                                  headers: [("X-IDENTITY-HEADER", secret)]), timeout: 30)
            if answer?.status != 200 { try await Task.sleep(nanoseconds: 500_000_000) }
        }
        // the transition address serves too
        let second = try? await client.send(.init(method: "GET", url: "http://127.0.0.1:\(transition)/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com",
                                                  headers: [("X-IDENTITY-HEADER", secret)]), timeout: 30)
        try await client.shutdown()
        #expect(second?.status == 200, "the second passed socket (the transition address) does not serve: \(second?.status ?? 0)")
        let agentLog = { (try? String(contentsOfFile: log, encoding: .utf8)).map { String($0.suffix(1500)) } ?? "" }
        let appId = try store.identity().appId
        let body = try answer.map { try JSONValue.parse($0.body, maxDepth: 8) }
        #expect(answer?.status == 200 && body?["access_token"]?.stringValue?.isEmpty == false && body?["client_id"]?.stringValue == appId,
                "status \(answer?.status ?? 0) — agent: \(agentLog())")
        // the environment file names the socket the agent was given
        let env = try String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8)
        #expect(env.contains("IDENTITY_ENDPOINT=http://127.0.0.1:\(port)/msi/token"), "\(env)")

        // the bootstrap roll runs the hook: it inherits neither the activation variables nor the socket
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: hookOut), Date() < deadline, agent.isRunning { try await Task.sleep(nanoseconds: 200_000_000) }
        let inherited = try #require(try? String(contentsOfFile: hookOut, encoding: .utf8), "the hook never ran: \(agentLog())")
        #expect(!inherited.contains("LISTEN_FDS") && !inherited.contains("LISTEN_PID"), "the hook inherited the activation variables")
        // no TCP socket (the listening one, a token-endpoint connection, a connection to Entra) is
        // among its descriptors (Foundation's own exec-status socket pair may be)
        let parts = inherited.components(separatedBy: "TCP-TABLE")
        let inodes = parts[0].split(separator: "\n").compactMap { line in line.range(of: "socket:[").map { String(line[$0.upperBound...].prefix { $0 != "]" }) } }
        let tcpInodes = Set(parts.count > 1 ? parts[1].split(separator: "\n").compactMap { row -> String? in
            let columns = row.split(separator: " ", omittingEmptySubsequences: true)
            return columns.count > 9 ? String(columns[9]) : nil
        } : [])
        #expect(tcpInodes.count > 1, "the hook could not read the TCP tables")
        #expect(inodes.filter(tcpInodes.contains).isEmpty, "the hook inherited TCP sockets: \(inodes.filter(tcpInodes.contains))")
        #expect(inherited.contains("KEYROLL_CERTIFICATE_PATH"), "not the hook's environment: \(inherited.prefix(400))")
    }

    /// A loopback port at or above 1024 that nothing listens on (the kernel's pick).
    static func freeUnprivilegedPort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 && getsockname(fd, $0, &size) == 0 } }
        return ok ? Int(UInt16(bigEndian: addr.sin_port)) : nil
    }

    /// A loopback port below 1024 that nothing listens on.
    static func freePrivilegedPort() -> Int? {
        for port in stride(from: 901, to: 1000, by: 7) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let ok = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
            if ok { return port }
        }
        return nil
    }
}
