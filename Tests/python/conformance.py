#!/usr/bin/env python3
"""Conformance of the KeyRoll Entra emulator with Microsoft's own client libraries.

  conformance.py STATE_DIR      (STATE_DIR/emulator.json as written by `keyroll-lab emulator --https`)

Runs MSAL Python (RS256/x5t and PS256/x5t#S256), azure-identity CertificateCredential (sync and
async), and msgraph-sdk (create application, addKey with a proof signed in Python, get, removeKey,
delete), then the error cases. Prints one JSON object: {"checks": {name: {"ok": bool, ...}}}.
No secret is printed.
"""
import asyncio, base64, datetime, hashlib, json, os, ssl, sys, time, traceback, uuid

# The machine's CA-bundle variables would override per-client trust (requests#3829): unset them
# for this process and pass the emulator's CA explicitly to every client.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "MSAL_FORCE_REGION", "AZURE_REGIONAL_AUTHORITY_NAME"):
    os.environ.pop(var, None)

import jwt as pyjwt
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

state = sys.argv[1]
info = json.load(open(f"{state}/emulator.json"))
BASE, CA, TENANT = info["baseURL"], info["caFile"], info["tenantId"]
PROV_ID, PROV_PEM = info["provisionerClientId"], info["provisionerCertificatePath"]
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
from checks import check, checks


def session():
    s = requests.Session()
    s.verify = CA
    s.trust_env = False
    return s


pem = open(PROV_PEM, "rb").read()
key = serialization.load_pem_private_key(pem, None)
cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----"):])
der = cert.public_bytes(serialization.Encoding.DER)
sha1_hex = hashlib.sha1(der).hexdigest().upper()
key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()


def msal_app(credential, client_id=PROV_ID, tenant=TENANT):
    return msal.ConfidentialClientApplication(client_id, authority=f"{BASE}/{tenant}", client_credential=credential,
                                              instance_discovery=False, http_client=session())


@check("msal_rs256_x5t")
def _():
    r = msal_app({"private_key": key_pem, "thumbprint": sha1_hex}).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in r, r
    assert r["token_type"] == "Bearer" and isinstance(r["expires_in"], int), r
    return {"token_source": r.get("token_source")}


@check("msal_ps256_x5t_s256")
def _():
    # no thumbprint + public_certificate: MSAL >= 1.35 signs PS256 with x5t#S256 (and sends x5c)
    r = msal_app({"private_key": key_pem, "public_certificate": cert_pem}).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in r, r


@check("msal_domain_tenant")
def _():
    r = msal_app({"private_key": key_pem, "thumbprint": sha1_hex}, tenant="keyroll-dev.onmicrosoft.com").acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in r, r


@check("azure_identity_sync")
def _():
    from azure.identity import CertificateCredential
    cred = CertificateCredential(TENANT, PROV_ID, PROV_PEM, authority=BASE, disable_instance_discovery=True, connection_verify=CA)
    tok = cred.get_token(GRAPH_SCOPE)
    assert tok.token and tok.expires_on > time.time()


@check("azure_identity_async")
def _():
    from azure.identity.aio import CertificateCredential

    async def go():
        cred = CertificateCredential(TENANT, PROV_ID, PROV_PEM, authority=BASE, disable_instance_discovery=True, connection_verify=CA)
        async with cred:
            return await cred.get_token(GRAPH_SCOPE)
    tok = asyncio.run(go())
    assert tok.token


@check("azure_identity_environment")
def _():
    from azure.identity import EnvironmentCredential
    env = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": PROV_ID, "AZURE_CLIENT_CERTIFICATE_PATH": PROV_PEM, "AZURE_AUTHORITY_HOST": BASE}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        tok = EnvironmentCredential(disable_instance_discovery=True, connection_verify=CA).get_token(GRAPH_SCOPE)
        assert tok.token
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_cert(cn, days=365):
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days)).sign(k, hashes.SHA256()))
    return k, c


def proof(signing_key, signing_cert, object_id, aud="00000002-0000-0000-c000-000000000000"):
    d = signing_cert.public_bytes(serialization.Encoding.DER)
    now = int(time.time())
    return pyjwt.encode({"aud": aud, "iss": object_id, "nbf": now, "exp": now + 600}, signing_key, algorithm="RS256",
                        headers={"x5t": base64.urlsafe_b64encode(hashlib.sha1(d).digest()).rstrip(b"=").decode(),
                                 "kid": hashlib.sha1(d).hexdigest().upper()})


def graph_client():
    import httpx
    from azure.identity.aio import CertificateCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory
    cred = CertificateCredential(TENANT, PROV_ID, PROV_PEM, authority=BASE, disable_instance_discovery=True, connection_verify=CA)
    auth = AzureIdentityAuthenticationProvider(cred, scopes=[GRAPH_SCOPE], allowed_hosts=["127.0.0.1", "localhost"])
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=CA)))
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = f"{BASE}/v1.0"
    return GraphServiceClient(request_adapter=adapter), cred


@check("msgraph_sdk_lifecycle")
def _():
    from msgraph.generated.applications.item.add_key.add_key_post_request_body import AddKeyPostRequestBody
    from msgraph.generated.applications.item.remove_key.remove_key_post_request_body import RemoveKeyPostRequestBody
    from msgraph.generated.models.application import Application
    from msgraph.generated.models.key_credential import KeyCredential
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    async def go():
        client, cred = graph_client()
        async with cred:
            app = await client.applications.post(Application(display_name=f"conformance-{uuid.uuid4().hex[:8]}", sign_in_audience="AzureADMyOrg"))
            assert app.id and app.app_id
            # first certificate by PATCH (the provisioner's path), then a self-service-style addKey
            k1, c1 = new_cert("conf-1")
            await client.applications.by_application_id(app.id).patch(Application(key_credentials=[KeyCredential(
                display_name="CN=conf-1", key=c1.public_bytes(serialization.Encoding.DER), type="AsymmetricX509Cert", usage="Verify")]))
            k2, c2 = new_cert("conf-2")
            kc = await client.applications.by_application_id(app.id).add_key.post(AddKeyPostRequestBody(
                key_credential=KeyCredential(key=c2.public_bytes(serialization.Encoding.DER), type="AsymmetricX509Cert", usage="Verify"),
                proof=proof(k1, c1, app.id)))
            assert kc.key_id and kc.custom_key_identifier == hashlib.sha1(c2.public_bytes(serialization.Encoding.DER)).digest(), kc
            got = await client.applications.by_application_id(app.id).get()
            assert len(got.key_credentials) == 2, got.key_credentials
            # a proof with Microsoft Graph's appId as aud is refused the way Graph refuses it
            bad = None
            try:
                await client.applications.by_application_id(app.id).remove_key.post(RemoveKeyPostRequestBody(
                    key_id=kc.key_id, proof=proof(k1, c1, app.id, aud="00000003-0000-0000-c000-000000000000")))
            except ODataError as e:
                bad = (e.response_status_code, e.error.code)
            assert bad == (401, "Authentication_MissingOrMalformed"), bad
            # removeKey of the first certificate with a proof by the second
            first = [k for k in got.key_credentials if k.key_id != kc.key_id][0]
            await client.applications.by_application_id(app.id).remove_key.post(RemoveKeyPostRequestBody(key_id=first.key_id, proof=proof(k2, c2, app.id)))
            got = await client.applications.by_application_id(app.id).get()
            assert [k.key_id for k in got.key_credentials] == [kc.key_id]
            alt = await client.applications_with_app_id(app.app_id).get()
            assert alt.id == app.id
            await client.applications.by_application_id(app.id).delete()
            missing = None
            try:
                await client.applications.by_application_id(app.id).get()
            except ODataError as e:
                missing = (e.response_status_code, e.error.code)
            assert missing == (404, "Request_ResourceNotFound"), missing
    asyncio.run(go())


def expect_aadsts(result, code):
    assert "error" in result, result
    assert code in result.get("error_codes", []), result
    assert result["error_description"].startswith(f"AADSTS{code}:"), result["error_description"][:80]
    return {"error": result["error"]}


@check("error_unregistered_certificate_700027")
def _():
    k, c = new_cert("stranger", 1)
    kp = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    r = msal_app({"private_key": kp, "thumbprint": hashlib.sha1(c.public_bytes(serialization.Encoding.DER)).hexdigest()}).acquire_token_for_client([GRAPH_SCOPE])
    return expect_aadsts(r, 700027)


def signed_assertion(aud, iat_shift=0):
    now = int(time.time()) + iat_shift
    return pyjwt.encode({"aud": aud, "iss": PROV_ID, "sub": PROV_ID, "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600},
                        key, algorithm="RS256", headers={"x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()})


@check("error_expired_assertion_700024")
def _():
    r = msal_app({"client_assertion": signed_assertion(f"{BASE}/{TENANT}/oauth2/v2.0/token", iat_shift=-7200)}).acquire_token_for_client([GRAPH_SCOPE])
    return expect_aadsts(r, 700024)


@check("error_wrong_audience_700023")
def _():
    r = msal_app({"client_assertion": signed_assertion("https://login.microsoftonline.com/other/oauth2/v2.0/token")}).acquire_token_for_client([GRAPH_SCOPE])
    return expect_aadsts(r, 700023)


@check("azure_identity_surfaces_700027")
def _():
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CertificateCredential
    k, c = new_cert("stranger2", 1)
    path = f"{state}/stranger.pem"
    with open(path, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        f.write(c.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o600)
    try:
        CertificateCredential(TENANT, PROV_ID, path, authority=BASE, disable_instance_discovery=True, connection_verify=CA).get_token(GRAPH_SCOPE)
        raise AssertionError("expected ClientAuthenticationError")
    except ClientAuthenticationError as e:
        assert "AADSTS700027" in str(e), str(e)[:200]
    finally:
        os.remove(path)


print(json.dumps({"checks": checks}))
