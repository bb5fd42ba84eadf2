#!/usr/bin/env python3
"""Microsoft's own SDKs getting tokens from the KeyRoll agent's managed-identity endpoint.

  managed_identity.py ENV_FILE STATE_DIR OBJECT_ID PRINCIPAL_ID OTHER_APP_ID [STREAM_SECONDS]

ENV_FILE is the token-endpoint.env the agent wrote (IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_CLIENT_ID,
NO_PROXY) and is the only configuration loaded: no key, no AZURE_CLIENT_CERTIFICATE_PATH. STATE_DIR holds
the emulator's emulator.json and ca.pem (for msgraph-sdk's calls to the emulated Graph). OBJECT_ID is the
app's application object id; PRINCIPAL_ID its service principal's object id (what App Service and IMDS call
object_id / principal_id); OTHER_APP_ID is another identity the same agent serves.

Runs azure-identity ManagedIdentityCredential (sync and async) and DefaultAzureCredential, MSAL Python's
ManagedIdentityClient, and msgraph-sdk through ManagedIdentityCredential; decodes every token and checks
its `appid`; selection by the service principal's object id; then the refusals (missing or wrong header,
another identity's client_id or object id, two selectors), and a stream of requests while the agent rolls. Prints one JSON object: {"checks": {name: {"ok": bool, ...}}}. No token
or secret is printed.
"""
import asyncio, base64, json, os, ssl, sys, time, traceback

for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TENANT_ID", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
            "MSI_ENDPOINT", "MSI_SECRET", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(var, None)

env_file, state, object_id, principal_id, other_app_id = sys.argv[1:6]
stream_seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 0
for line in open(env_file):
    line = line.strip()
    if line and not line.startswith("#"):
        k, v = line.split("=", 1)
        os.environ[k] = v
APP_ID = os.environ["AZURE_CLIENT_ID"]
ENDPOINT, SECRET = os.environ["IDENTITY_ENDPOINT"], os.environ["IDENTITY_HEADER"]
info = json.load(open(f"{state}/emulator.json"))
BASE, CA = info["baseURL"], info["caFile"]
GRAPH = "https://graph.microsoft.com"
from checks import check, checks

import requests


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def expect_app(token, resource):
    c = claims(token)
    assert c.get("appid") == APP_ID, f"appid {c.get('appid')} is not {APP_ID}"
    assert c.get("aud") in (resource, resource.rstrip("/")), f"aud {c.get('aud')} for resource {resource}"
    return c


def raw(params, headers):
    s = requests.Session()
    s.trust_env = False
    return s.get(ENDPOINT, params=params, headers=headers, timeout=30)


@check("azure_identity_managed_identity_sync")
def _():
    from azure.identity import ManagedIdentityCredential
    t = ManagedIdentityCredential().get_token(GRAPH + "/.default")
    expect_app(t.token, GRAPH)
    left = t.expires_on - time.time()
    assert left >= 600, f"served with {left:.0f} s left"
    # by client id, as DefaultAzureCredential sends it, and for another resource
    t2 = ManagedIdentityCredential(client_id=APP_ID).get_token("https://management.azure.com//.default")
    expect_app(t2.token, "https://management.azure.com/")
    return {"seconds_left": int(left)}


@check("azure_identity_managed_identity_async")
def _():
    from azure.identity.aio import ManagedIdentityCredential

    async def go():
        async with ManagedIdentityCredential() as cred:
            t = await cred.get_token("https://vault.azure.net/.default")
            expect_app(t.token, "https://vault.azure.net")
    asyncio.run(go())


@check("azure_identity_default_credential_env_file_only")
def _():
    from azure.identity import DefaultAzureCredential
    t = DefaultAzureCredential(exclude_interactive_browser_credential=True).get_token("api://keyroll-conformance/.default")
    expect_app(t.token, "api://keyroll-conformance")


@check("msal_managed_identity_client")
def _():
    import msal
    s = requests.Session()
    s.trust_env = False
    for mi in (msal.SystemAssignedManagedIdentity(), msal.UserAssignedManagedIdentity(client_id=APP_ID)):
        client = msal.ManagedIdentityClient(mi, http_client=s)
        r = client.acquire_token_for_client(resource=GRAPH)
        assert "access_token" in r, {k: v for k, v in r.items() if k != "access_token"}
        expect_app(r["access_token"], GRAPH)


@check("msgraph_sdk_through_managed_identity")
def _():
    import httpx
    from azure.identity.aio import ManagedIdentityCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    async def go():
        cred = ManagedIdentityCredential()
        auth = AzureIdentityAuthenticationProvider(cred, scopes=[GRAPH + "/.default"], allowed_hosts=["127.0.0.1", "localhost"])
        http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=CA)))
        adapter = GraphRequestAdapter(auth, http)
        adapter.base_url = f"{BASE}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        app = await client.applications.by_application_id(object_id).get()
        await cred.close()
        assert app.app_id == APP_ID, f"Graph returned {app.app_id}"
        return {"displayName": app.display_name}
    return asyncio.run(go())


@check("select_by_the_service_principals_object_id")
def _():
    import uuid
    import msal
    from azure.identity import ManagedIdentityCredential
    t = ManagedIdentityCredential(identity_config={"object_id": principal_id}).get_token(GRAPH + "/.default")
    oid = expect_app(t.token, GRAPH).get("oid")
    assert oid == principal_id, f"oid {oid} is not the service principal's object id {principal_id}"
    s = requests.Session()
    s.trust_env = False
    r = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(object_id=principal_id), http_client=s).acquire_token_for_client(resource=GRAPH)
    assert "access_token" in r, {k: v for k, v in r.items() if k != "access_token"}
    # principal_id is App Service's spelling; the application's object id is a KeyRoll extension
    for name, value, status in (("principal_id", principal_id, 200), ("object_id", object_id, 200), ("object_id", str(uuid.uuid4()), 400)):
        r = raw({"api-version": "2019-08-01", "resource": GRAPH, name: value}, {"X-IDENTITY-HEADER": SECRET})
        assert r.status_code == status, (name, r.status_code, r.text[:200])


@check("two_selectors_are_400")
def _():
    r = raw([("api-version", "2019-08-01"), ("resource", GRAPH), ("client_id", APP_ID), ("object_id", principal_id)], {"X-IDENTITY-HEADER": SECRET})
    assert r.status_code == 400 and "mutually exclusive" in r.json()["message"], (r.status_code, r.text[:200])


@check("missing_header_is_401")
def _():
    r = raw({"api-version": "2019-08-01", "resource": GRAPH}, {})
    assert r.status_code == 401 and r.json()["statusCode"] == 401, (r.status_code, r.text[:200])


@check("wrong_header_is_401")
def _():
    r = raw({"api-version": "2019-08-01", "resource": GRAPH}, {"X-IDENTITY-HEADER": "x" * len(SECRET)})
    assert r.status_code == 401 and "error" in r.json(), (r.status_code, r.text[:200])


@check("another_identity_is_refused_with_400")
def _():
    r = raw({"api-version": "2019-08-01", "resource": GRAPH, "client_id": other_app_id}, {"X-IDENTITY-HEADER": SECRET})
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert "access_token" not in r.text
    from azure.identity import ManagedIdentityCredential, CredentialUnavailableError
    from azure.core.exceptions import ClientAuthenticationError
    try:
        ManagedIdentityCredential(client_id=other_app_id).get_token(GRAPH + "/.default")
        raise AssertionError("the SDK got a token for another identity")
    except (CredentialUnavailableError, ClientAuthenticationError) as e:
        return {"sdk_error": type(e).__name__}


@check("unknown_path_is_json_400")
def _():
    s = requests.Session()
    s.trust_env = False
    r = s.get(ENDPOINT.rsplit("/", 1)[0] + "/nothing-here", headers={"X-IDENTITY-HEADER": SECRET}, timeout=30)
    assert r.status_code == 400 and r.json()["statusCode"] == 400, (r.status_code, r.text[:200])


if stream_seconds > 0:
    @check("stream_while_the_agent_rolls")
    def _():
        from azure.identity import ManagedIdentityCredential
        cred = ManagedIdentityCredential()
        n, errors, end = 0, [], time.time() + stream_seconds
        while time.time() < end:
            resource = f"api://keyroll-stream-{n}"  # a new resource each time: every request reaches the agent and Entra
            try:
                expect_app(cred.get_token(resource + "/.default").token, resource)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            n += 1
        assert not errors, errors[:3]
        return {"requests": n}

print(json.dumps({"checks": checks}))
