import Foundation
import KeyRollPrimitives

/// A bootstrap bundle's PEM pair as a signing credential, and back: the one place where the bundle
/// format meets the key and certificate types.
extension BootstrapBundle {
    public init(tenantId: String, authorityHost: String, graphBaseURL: String, applicationObjectId: String, appId: String,
                displayName: String?, replica: ReplicaName? = nil, credential: SigningCredential, keyId: String?, createdAt: Date, createdBy: String?) throws {
        self.init(tenantId: tenantId, authorityHost: authorityHost, graphBaseURL: graphBaseURL, applicationObjectId: applicationObjectId, appId: appId,
                  displayName: displayName, replica: replica,
                  bootstrap: Credential(keyId: keyId, certificatePEM: credential.certificate.pem, privateKeyPEM: try credential.privateKey.pkcs8PEM),
                  createdAt: createdAt, createdBy: createdBy)
    }

    /// The bundle's signing credential (its certificate and key must belong together).
    public func signingCredential() throws -> SigningCredential {
        try SigningCredential(privateKey: try RSAPrivateKey(pem: bootstrap.privateKeyPEM), certificate: try X509Certificate(pem: bootstrap.certificatePEM))
    }
}
