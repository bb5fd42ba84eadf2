/// The listening sockets a service manager passed this process (systemd's socket activation,
/// `sd_listen_fds(3)`): `LISTEN_PID` names this process, `LISTEN_FDS` counts the descriptors from
/// 3 on, and `LISTEN_FDNAMES` names them (`FileDescriptorName=` in the `.socket` unit).
///
/// The packaged agent takes its token endpoint this way: PID 1 binds the privileged loopback port
/// at boot and holds it across agent restarts, so no local user can bind it first (docs/security.md).
public struct SocketActivation: Equatable, Sendable {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    public static let firstDescriptor: Int32 = 3
    /// The name the packaged `.socket` unit gives the token endpoint's socket.
    public static let tokenEndpointName = "token-endpoint"
    /// The name of the earlier version's address (`keyroll-agent-transition.socket`): served, never
    /// advertised. A name of its own because systemd passes the sockets of two units in no set order.
    public static let transitionName = "token-endpoint-transition"

    /// Passed descriptors by name (unnamed ones are called `unknown`, as systemd does).
    public let descriptors: [(name: String, descriptor: Int32)]

    public static func == (a: Self, b: Self) -> Bool { a.descriptors.elementsEqual(b.descriptors) { $0 == $1 } }

    /// The descriptors passed to process `pid`, or nil when none were (no `LISTEN_FDS`, or they
    /// were meant for another process: a parent's variables inherited by a child).
    /// A malformed value is an error: the service manager meant to pass something.
    public static func parse(environment: [String: String], pid: Int32) throws(SocketActivationError) -> SocketActivation? {
        guard let count = environment["LISTEN_FDS"] else { return nil }
        guard let owner = environment["LISTEN_PID"], let ownerPID = Int32(owner) else { throw .malformed("LISTEN_PID is missing or not a number") }
        guard ownerPID == pid else { return nil }
        guard let n = Int32(count), n >= 0, n <= 64 else { throw .malformed("LISTEN_FDS=\(count.prefix(20)) is not a count from 0 to 64") }
        let names = environment["LISTEN_FDNAMES"].map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        guard names.isEmpty || names.count == Int(n) else { throw .malformed("LISTEN_FDNAMES names \(names.count) descriptors, LISTEN_FDS says \(n)") }
        return SocketActivation(descriptors: (0..<n).map { i in (names.isEmpty ? "unknown" : names[Int(i)], firstDescriptor + i) })
    }

    /// The token endpoint's descriptors: those named ``tokenEndpointName`` (the packaged privileged
    /// port), or the only one passed if it is unnamed; then, after them, those named
    /// ``transitionName`` (an earlier version's port, held for applications not yet restarted).
    /// The first is the address written to the environment files, so it is never a transition
    /// address: without a primary descriptor the transition ones are not served either.
    public var tokenEndpoints: [Int32] {
        var primary = descriptors.filter { $0.name == Self.tokenEndpointName }.map(\.descriptor)
        if primary.isEmpty, descriptors.count == 1, descriptors[0].name != Self.transitionName { primary = [descriptors[0].descriptor] }
        guard !primary.isEmpty else { return [] }
        return primary + descriptors.filter { $0.name == Self.transitionName }.map(\.descriptor)
    }

    /// The variables to remove once the descriptors are taken, so no child (a reload hook) sees them.
    public static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]
}

/// A socket-activation environment that cannot be read.
public enum SocketActivationError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    public var description: String {
        switch self {
        case .malformed(let what): "The service manager's socket activation variables are malformed: \(what). Check the agent's .socket unit."
        }
    }
}
