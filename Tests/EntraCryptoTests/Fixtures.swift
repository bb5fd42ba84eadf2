import EntraCrypto
import Foundation

/// Keys are slow to generate; tests share a few.
enum Fixtures {
    static let now = Date(timeIntervalSince1970: 1_790_000_000)
    static let credential: SigningCredential = try! SigningCredential.generate(
        subject: CertificateSubject(commonName: "keyroll-test", organization: "Contoso", organizationalUnit: "Platform"),
        notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(2 * 86_400))
    static let otherCredential: SigningCredential = try! SigningCredential.generate(
        subject: CertificateSubject(commonName: "other"), notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(86_400))
}
