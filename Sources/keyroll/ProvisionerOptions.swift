import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import Logging
import Provisioning

/// The provisioner's identity, from the usual Azure variables (flags win).
struct ProvisionerOptions: ParsableArguments {
    @Option(name: .long, help: "Tenant id or domain (default: $AZURE_TENANT_ID).")
    var tenant: String?

    @Option(name: .long, help: "The provisioner's application (client) id (default: $AZURE_CLIENT_ID).")
    var clientId: String?

    @Option(name: .long, help: "PEM with the provisioner's key and certificate (default: $AZURE_CLIENT_CERTIFICATE_PATH; or $AZURE_CLIENT_SECRET).")
    var certificate: String?

    @Option(name: .long, help: "Authority host (default: $AZURE_AUTHORITY_HOST or https://login.microsoftonline.com).")
    var authority: String?

    @Option(name: .long, help: "Graph base URL (default: $KEYROLL_GRAPH_URL, else {authority}/v1.0 for a local emulator, else https://graph.microsoft.com/v1.0).")
    var graphURL: String?

    @OptionGroup var trust: TrustOptions

    func connect(retry: RetryPolicy = RetryPolicy(maxAttempts: 12)) throws -> (Provisioner, AsyncHTTPTransport) {
        let env = Environment.current
        guard let tenant = tenant ?? env["AZURE_TENANT_ID"] else { throw ValidationError("Name the tenant: --tenant or AZURE_TENANT_ID.") }
        guard let clientId = clientId ?? env["AZURE_CLIENT_ID"] else { throw ValidationError("Name the provisioner: --client-id or AZURE_CLIENT_ID.") }
        let authority = authority ?? env["AZURE_AUTHORITY_HOST"] ?? "https://login.microsoftonline.com"
        let authorityURL = authority.contains("://") ? authority : "https://" + authority
        try SecureURL.check(authorityURL, what: self.authority != nil ? "--authority" : env["AZURE_AUTHORITY_HOST"] != nil ? "AZURE_AUTHORITY_HOST" : "the authority")
        let isLocal = URLComponents(string: authorityURL)?.host.map(SecureURL.isLoopback(host:)) ?? false
        let graph = graphURL ?? env["KEYROLL_GRAPH_URL"] ?? (isLocal ? authorityURL + "/v1.0" : "https://graph.microsoft.com/v1.0")
        try SecureURL.check(graph, what: graphURL != nil ? "--graph-url" : env["KEYROLL_GRAPH_URL"] != nil ? "KEYROLL_GRAPH_URL" : "the Graph URL")
        let credential: ClientCredential
        if certificate == nil, env["AZURE_CLIENT_CERTIFICATE_PATH"] != nil, env["AZURE_CLIENT_SECRET"] != nil {
            throw ValidationError("Both AZURE_CLIENT_CERTIFICATE_PATH and AZURE_CLIENT_SECRET are set; KeyRoll will not guess which one you mean. Unset one (a certificate is safer).")
        }
        if let path = certificate ?? env["AZURE_CLIENT_CERTIFICATE_PATH"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw UserFacingError("Cannot read the provisioner certificate \(path).") }
            credential = .certificate(try SigningCredential(combinedPEM: text, passphrase: env["AZURE_CLIENT_CERTIFICATE_PASSWORD"]))
        } else if let secret = env["AZURE_CLIENT_SECRET"] {
            credential = .secret(secret)
        } else {
            throw ValidationError("Give the provisioner a credential: --certificate, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_CLIENT_SECRET.")
        }
        let endpoints = EntraEndpoints(authorityHost: authorityURL, tenant: tenant, graphBaseURL: graph)
        let transport = try trust.transport()
        // the test hooks (CrashHook), when set, see every exchange; in production this is the transport itself
        let hooks = CrashHook.sideEffects()
        let graphTransport: any HTTPTransport = hooks.isNone ? transport : SideEffectTransport(transport, hook: hooks)
        return (Provisioner(graph: GraphClient.signingIn(as: clientId, with: credential, endpoints: endpoints, transport: graphTransport, retry: retry)), transport)
    }
}
