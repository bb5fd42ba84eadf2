import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness
import Logging
import Provisioning
import ServiceLifecycle

extension BenchCommand {
    struct Crypto: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "crypto", abstract: "RSA keygen/s and sign/s through swift-crypto next to OpenSSL on this machine.")
        @Option var seconds = 3.0
        @Option(help: "Keys per keygen measurement.") var keys = 20
        @Flag var json = false

        func run() async throws {
            let cmd = "keyroll-lab bench crypto --seconds \(seconds) --keys \(keys)"
            for bits in [RSAKeySize.bits2048, .bits3072] {
                let swiftSign = try BenchCommand.signRate(bits: bits, seconds: seconds, algorithm: .rs256)
                let ssl = BenchCommand.opensslSignRate(bits: bits.rawValue, seconds: max(1, Int(seconds)))
                Figure(name: "RS256 sign RSA-\(bits.rawValue), swift-crypto, 1 thread", value: swiftSign, unit: "sign/s", bound: ssl, boundName: "openssl speed rsa\(bits.rawValue)", command: cmd).print(json: json)
                let ps = try BenchCommand.signRate(bits: bits, seconds: seconds / 2, algorithm: .ps256)
                Figure(name: "PS256 sign RSA-\(bits.rawValue), swift-crypto, 1 thread", value: ps, unit: "sign/s", bound: ssl, boundName: "openssl speed rsa\(bits.rawValue) (PKCS#1)", command: cmd).print(json: json)
                let n = bits == .bits2048 ? keys : max(4, keys / 3)
                let kg = BenchCommand.keygenRate(bits: bits, count: n, threads: 1)
                let py = BenchCommand.pythonKeygenRate(bits: bits.rawValue, count: n)
                Figure(name: "keygen RSA-\(bits.rawValue), swift-crypto, 1 thread (n=\(n))", value: kg, unit: "keys/s", bound: py, boundName: "Python cryptography/OpenSSL keygen", command: cmd).print(json: json)
            }
        }
    }
}
