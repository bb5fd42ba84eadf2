import KeyRoll
import Testing

/// Reading the descriptors a service manager passed (sd_listen_fds(3)), purely.
@Suite struct SocketActivationTests {
    @Test func theNamedTokenEndpointSocketIsFound() throws {
        let a = try SocketActivation.parse(environment: ["LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "metrics:token-endpoint"], pid: 42)
        #expect(a?.descriptors.map(\.descriptor) == [3, 4])
        #expect(a?.tokenEndpoints == [4])
        // two addresses under the name (a drop-in adding one): both served, in the order passed
        let two = try SocketActivation.parse(environment: ["LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "token-endpoint:token-endpoint:metrics"], pid: 42)
        #expect(two?.tokenEndpoints == [3, 4])
    }

    /// The earlier version's address comes from a unit of its own, and systemd passes two units'
    /// sockets in no set order: it is served after the privileged port whatever the order, so the
    /// environment files never name it, and never served without the privileged port.
    @Test func theTransitionAddressIsServedButNeverFirst() throws {
        for names in ["token-endpoint-transition:token-endpoint", "token-endpoint:token-endpoint-transition"] {
            let a = try SocketActivation.parse(environment: ["LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": names], pid: 42)
            let primary: Int32 = names.hasPrefix("token-endpoint:") ? 3 : 4
            #expect(a?.tokenEndpoints == [primary, 7 - primary], "\(names)")
        }
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "token-endpoint-transition"], pid: 42)?.tokenEndpoints == [])
    }

    @Test func oneUnnamedSocketIsTheTokenEndpoint() throws {
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "7", "LISTEN_FDS": "1"], pid: 7)?.tokenEndpoints == [3])
        // two unnamed ones: which is which cannot be told
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "7", "LISTEN_FDS": "2"], pid: 7)?.tokenEndpoints == [])
    }

    @Test func variablesMeantForAnotherProcessOrAbsentPassNothing() throws {
        #expect(try SocketActivation.parse(environment: [:], pid: 7) == nil)
        // a parent's variables inherited by a child
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "6", "LISTEN_FDS": "1"], pid: 7) == nil)
    }

    @Test func malformedVariablesAreAnErrorThatNamesThem() {
        for env in [["LISTEN_FDS": "1"], ["LISTEN_PID": "x", "LISTEN_FDS": "1"], ["LISTEN_PID": "7", "LISTEN_FDS": "-1"],
                    ["LISTEN_PID": "7", "LISTEN_FDS": "many"], ["LISTEN_PID": "7", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"]] {
            #expect(throws: SocketActivationError.self, "\(env)") { try SocketActivation.parse(environment: env, pid: 7) }
        }
        let e = SocketActivationError.malformed("LISTEN_FDS=x is not a count from 0 to 64")
        #expect(e.description.contains("LISTEN_FDS") && e.description.contains(".socket unit"))
    }
}
