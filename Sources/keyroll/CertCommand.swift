import ArgumentParser
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives

struct CertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "Create and inspect RSA client certificates for Entra ID.",
        subcommands: [New.self, Show.self]
    )

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new",
            abstract: "Generate an RSA key and a self-signed client certificate (bootstrap-style by default: 2 days).",
            discussion: """
                Writes key.pem (PKCS#8), cert.pem and combined.pem (key + certificate, usable as \
                AZURE_CLIENT_CERTIFICATE_PATH) into --out, a folder created with mode 0700; key files are 0600.
                """
        )

        @Option(name: .long, help: "Subject common name (CN).")
        var subject: String = "keyroll-bootstrap"

        @Option(name: .long, help: "Subject organization (O).")
        var organization: String?

        @Option(name: .long, help: "Validity in days, from now.")
        var days: Double = 2

        @Option(name: .long, help: "RSA key size: 2048, 3072 or 4096.")
        var keySize: Int = 2048

        @Option(name: .long, help: "Output folder (created 0700).")
        var out: String

        @Flag(name: .long, help: "Print the result as JSON.")
        var json = false

        func run() async throws {
            let size: RSAKeySize
            do { size = try RSAKeySize(bits: keySize) } catch { throw ValidationError("--key-size: \(error)") }
            guard days > 0, days <= 3650 else { throw ValidationError("--days must be between 0 and 3650, not \(days)") }
            let now = SystemClock().now()
            let credential = try SigningCredential.generate(
                size: size, subject: CertificateSubject(commonName: subject, organization: organization),
                notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(days * 86_400))
            try SecureFiles.ensurePrivateDirectory(out)
            try SecureFiles.writeAtomically(credential.privateKey.pkcs8PEM, to: out + "/key.pem")
            try SecureFiles.writeAtomically(credential.certificate.pem, to: out + "/cert.pem", mode: 0o644)
            try SecureFiles.writeAtomically(credential.combinedPEM, to: out + "/combined.pem")
            print(describe(credential.certificate, json: json, extra: ["folder": out]))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the subject, validity and thumbprints of a PEM certificate.")

        @Argument(help: "A PEM file holding a certificate (a combined key + certificate PEM works too).")
        var path: String

        @Flag(name: .long, help: "Print the result as JSON.")
        var json = false

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw UserFacingError("Cannot read \(path): check that the file exists and is a PEM text file.")
            }
            let blocks = try PEMBlock.all(in: text)
            guard let block = blocks.first(where: { $0.label == "CERTIFICATE" }) else {
                throw UserFacingError("\(path) holds no 'BEGIN CERTIFICATE' block.")
            }
            print(describe(try X509Certificate(der: block.der), json: json, extra: [:]))
        }
    }
}

func describe(_ cert: X509Certificate, json: Bool, extra: [String: String]) -> String {
    let iso = ISO8601DateFormatter()
    var fields: [(String, String)] = [
        ("subject", cert.subject),
        ("notBefore", iso.string(from: cert.notBefore)),
        ("notAfter", iso.string(from: cert.notAfter)),
        ("keyBits", String((try? cert.rsaPublicKey().bits) ?? 0)),
        ("sha1", cert.sha1Thumbprint.hex),
        ("sha256", cert.sha256Thumbprint.hex),
        ("customKeyIdentifier", cert.sha1Thumbprint.base64),
        ("x5t", cert.sha1Thumbprint.base64URL),
        ("x5t#S256", cert.sha256Thumbprint.base64URL),
    ]
    fields += extra.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    if json {
        let obj = JSONValue.object(Dictionary(uniqueKeysWithValues: fields.map { ($0.0, JSONValue.string($0.1)) }))
        return String(decoding: obj.serialized(), as: UTF8.self)
    }
    let width = fields.map(\.0.count).max() ?? 0
    return fields.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
}
