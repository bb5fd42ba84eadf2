// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "KeyRoll",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyroll", targets: ["keyroll"]),
        .executable(name: "keyroll-supervisor", targets: ["keyroll-supervisor"]),
        .executable(name: "keyroll-lab", targets: ["keyroll-lab"]),
        .library(name: "KeyRollPrimitives", targets: ["KeyRollPrimitives"]),
        .library(name: "EntraCrypto", targets: ["EntraCrypto"]),
        .library(name: "EntraClient", targets: ["EntraClient"]),
        .library(name: "EntraEmulator", targets: ["EntraEmulator"]),
        .library(name: "KeyRoll", targets: ["KeyRoll"]),
        .library(name: "Provisioning", targets: ["Provisioning"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Shared primitives with no I/O policy of their own: JSON values, UTC time, clocks and
        // sleepers, backoff, the seedable PRNG, secure files, JSON-lines files, side-effect hooks,
        // and the bootstrap bundle format.
        // The one backoff formula; imports nothing, so the supervisor links it without Foundation.
        .target(name: "KeyRollBackoff"),
        .target(name: "KeyRollPrimitives", dependencies: ["KeyRollBackoff"]),
        // Pure cryptography: keys, certificates, thumbprints, compact JWS, assertions, proofs. No I/O, no clock.
        .target(
            name: "EntraCrypto",
            dependencies: [
                "KeyRollPrimitives",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The PKCS#11 interface's types (a header only): the module is loaded at run time, never linked.
        .target(name: "CPKCS11"),
        // Keys inside a PKCS#11 token (HSM, TPM): RFC 7512 URIs, sessions that recover, key pairs
        // generated non-extractable, signing by the token.
        .target(
            name: "PKCS11",
            dependencies: ["CPKCS11", "EntraCrypto", "KeyRollPrimitives", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Talks to Entra (real or emulated): tokens, Graph calls, retries, typed errors.
        .target(
            name: "EntraClient",
            dependencies: [
                "EntraCrypto", "KeyRollPrimitives",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The rolling agent: store, policy, state machine, journal.
        .target(
            name: "KeyRoll",
            dependencies: ["EntraCrypto", "EntraClient", "KeyRollPrimitives", "PKCS11", .product(name: "Logging", package: "swift-log"),
                           .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        // The central side: bulk provisioning, audit, re-bootstrap.
        .target(
            name: "Provisioning",
            dependencies: ["EntraCrypto", "EntraClient", "KeyRollPrimitives", .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams")]
        ),
        // What both executables share: options, environment, errors, deadlines, logging setup.
        .target(
            name: "KeyRollCLI",
            dependencies: [
                "EntraCrypto", "EntraClient", "KeyRoll", "KeyRollPrimitives",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The lean agent's long-lived process (`keyroll agent --lean` execs it): the standard library
        // and glibc only, so that sleeping between passes costs a few MiB.
        .target(name: "CSupervisor"),
        .target(name: "AgentSupervisor", dependencies: ["CSupervisor", "KeyRollBackoff"]),
        .executableTarget(name: "keyroll-supervisor", dependencies: ["AgentSupervisor"]),
        // The production tool: agent, roll, status, plan, import, cert, provision, audit, rebootstrap.
        // Links no emulator, SQLite or HTTPS-server code.
        .executableTarget(
            name: "keyroll",
            dependencies: [
                "EntraCrypto", "EntraClient", "KeyRoll", "KeyRollCLI", "KeyRollPrimitives", "PKCS11", "Provisioning",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // A local Entra ID: token service + Graph application endpoints, SQLite store, virtual clock, faults.
        .target(
            name: "EntraEmulator",
            dependencies: [
                "EntraCrypto", "KeyRollPrimitives",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The lab's harness, shared by the tests, the demo and the benchmarks: one served emulator,
        // one way to wire clients to it, one in-process transport, one lockout check.
        .target(
            name: "LabHarness",
            dependencies: [
                "EntraCrypto", "EntraClient", "EntraEmulator", "KeyRoll", "KeyRollPrimitives", "Provisioning",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The lab tool: the emulator server, the demo, the benchmarks.
        .executableTarget(
            name: "keyroll-lab",
            dependencies: [
                "AgentSupervisor", "EntraCrypto", "EntraClient", "EntraEmulator", "KeyRoll", "KeyRollCLI", "KeyRollPrimitives", "LabHarness", "PKCS11", "Provisioning",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Helpers for the test targets only: subprocesses (openssl, Python verifiers), temp folders.
        .target(name: "TestSupport", dependencies: ["EntraCrypto", "EntraEmulator", "KeyRollPrimitives", "LabHarness",
                                                   .product(name: "Logging", package: "swift-log")], path: "Tests/TestSupport"),
        .testTarget(
            name: "EntraCryptoTests",
            dependencies: ["EntraCrypto", "KeyRollPrimitives", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "EntraClientTests",
            dependencies: ["EntraClient", "EntraEmulator", "EntraCrypto", "KeyRollPrimitives", "LabHarness", "TestSupport", .product(name: "Logging", package: "swift-log"), .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "EntraEmulatorTests",
            dependencies: ["EntraEmulator", "EntraClient", "EntraCrypto", "KeyRollPrimitives", "LabHarness", "TestSupport"]
        ),
        .testTarget(
            name: "ProvisioningTests",
            dependencies: ["Provisioning", "KeyRoll", "EntraEmulator", "EntraCrypto", "EntraClient", "KeyRollPrimitives", "LabHarness", "TestSupport"]
        ),
        .testTarget(
            name: "KeyRollTests",
            dependencies: ["KeyRoll", "AgentSupervisor", "EntraEmulator", "EntraCrypto", "EntraClient", "KeyRollPrimitives", "LabHarness", "PKCS11", "Provisioning", "TestSupport",
                           .product(name: "MetricsTestKit", package: "swift-metrics")]
        ),
        // Tests that drive the built executables (crashes by SIGKILL, the demo, the benchmarks'
        // smoke run, bad command lines). They fail, never skip, when a binary is missing.
        .testTarget(
            name: "BinaryTests",
            dependencies: ["AgentSupervisor", "KeyRoll", "EntraEmulator", "EntraCrypto", "EntraClient", "KeyRollPrimitives", "LabHarness", "PKCS11", "Provisioning", "TestSupport"]
        ),
    ]
)
