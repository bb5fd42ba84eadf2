// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "KeyRoll",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyroll", targets: ["keyroll"]),
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
    ],
    targets: [
        // Pure cryptography: keys, certificates, thumbprints, compact JWS, assertions, proofs. No I/O, no clock.
        .target(
            name: "EntraCrypto",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // A local Entra ID: token service + Graph application endpoints, SQLite store, virtual clock, faults.
        .target(
            name: "EntraEmulator",
            dependencies: [
                "EntraCrypto",
                "EntraClient",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Talks to Entra (real or emulated): tokens, Graph calls, retries, typed errors.
        .target(
            name: "EntraClient",
            dependencies: [
                "EntraCrypto",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The rolling agent: store, policy, state machine, journal.
        .target(
            name: "KeyRoll",
            dependencies: ["EntraCrypto", "EntraClient", .product(name: "Logging", package: "swift-log")]
        ),
        // The central side: bulk provisioning, audit, re-bootstrap.
        .target(
            name: "Provisioning",
            dependencies: ["EntraCrypto", "EntraClient", "KeyRoll", .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "keyroll",
            dependencies: [
                "EntraCrypto", "EntraClient", "EntraEmulator", "KeyRoll", "Provisioning", .product(name: "Hummingbird", package: "hummingbird"), .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Helpers shared by the test targets: subprocesses (openssl, Python verifiers), temp folders.
        .target(name: "TestSupport", dependencies: ["EntraCrypto", "EntraEmulator", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                   .product(name: "Logging", package: "swift-log")], path: "Tests/TestSupport"),
        .testTarget(
            name: "EntraCryptoTests",
            dependencies: ["EntraCrypto", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "EntraClientTests",
            dependencies: ["EntraClient", "EntraEmulator", "EntraCrypto", "TestSupport", .product(name: "Logging", package: "swift-log"), .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "EntraEmulatorTests",
            dependencies: ["EntraEmulator", "EntraCrypto", "EntraClient", "TestSupport"]
        ),
        .testTarget(
            name: "ProvisioningTests",
            dependencies: ["Provisioning", "KeyRoll", "EntraEmulator", "EntraCrypto", "EntraClient", "TestSupport"]
        ),
        .testTarget(
            name: "KeyRollTests",
            dependencies: ["KeyRoll", "EntraEmulator", "EntraCrypto", "EntraClient", "Provisioning", "TestSupport"]
        ),
    ]
)
