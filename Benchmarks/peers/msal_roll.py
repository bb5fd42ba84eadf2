#!/usr/bin/env python3
"""A certificate roll the way a user would write it by hand with msal + cryptography + requests.

  msal_roll.py BUNDLE.json CA.pem OUT_DIR

Signs in as the app with its current certificate, generates a new RSA-2048 key and a 1-year
self-signed certificate, registers it with Graph addKey (proof signed by the current key), polls the
token endpoint with the new key until it works, then removes the old key with removeKey (proof signed
by the new key) and writes the new key + certificate to OUT_DIR/current.pem.
"""
import base64, datetime, hashlib, json, os, sys, time, uuid

for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
    os.environ.pop(v, None)

import jwt
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

bundle = json.load(open(sys.argv[1]))
ca, out_dir = sys.argv[2], sys.argv[3]
authority = f'{bundle["authorityHost"]}/{bundle["tenantId"]}'
graph = bundle["graphBaseURL"]
app_id, object_id = bundle["appId"], bundle["applicationObjectId"]
session = requests.Session()
session.verify = ca
session.trust_env = False


def thumbprint(cert):
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def token(key_pem, cert):
    app = msal.ConfidentialClientApplication(app_id, authority=authority, instance_discovery=False, http_client=session,
                                             client_credential={"private_key": key_pem, "thumbprint": thumbprint(cert)})
    return app.acquire_token_for_client(["https://graph.microsoft.com/.default"])


def proof(key, cert):
    now = int(time.time())
    der = cert.public_bytes(serialization.Encoding.DER)
    return jwt.encode({"aud": "00000002-0000-0000-c000-000000000000", "iss": object_id, "nbf": now, "exp": now + 600}, key, algorithm="RS256",
                      headers={"x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(), "kid": thumbprint(cert)})


old_key_pem = bundle["bootstrap"]["privateKeyPEM"]
old_key = serialization.load_pem_private_key(old_key_pem.encode(), None)
old_cert = x509.load_pem_x509_certificate(bundle["bootstrap"]["certificatePEM"].encode())
bearer = token(old_key_pem, old_cert)["access_token"]

new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"python-{app_id}")])
new_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(new_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365)).sign(new_key, hashes.SHA256()))
new_key_pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

r = session.post(f"{graph}/applications/{object_id}/addKey", headers={"Authorization": f"Bearer {bearer}"}, json={
    "keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify",
                      "key": base64.b64encode(new_cert.public_bytes(serialization.Encoding.DER)).decode()},
    "passwordCredential": None, "proof": proof(old_key, old_cert)})
r.raise_for_status()

for attempt in range(60):  # wait for propagation
    if "access_token" in token(new_key_pem, new_cert):
        break
    time.sleep(min(2 ** attempt, 10))
else:
    sys.exit("the new key never worked")

new_bearer = token(new_key_pem, new_cert)["access_token"]
keys = session.get(f"{graph}/applications/{object_id}?$select=id,keyCredentials", headers={"Authorization": f"Bearer {new_bearer}"}).json()["keyCredentials"]
old_tp = base64.b64encode(hashlib.sha1(old_cert.public_bytes(serialization.Encoding.DER)).digest()).decode()
for k in keys:
    if k["customKeyIdentifier"] == old_tp:
        session.post(f"{graph}/applications/{object_id}/removeKey", headers={"Authorization": f"Bearer {new_bearer}"},
                     json={"keyId": k["keyId"], "proof": proof(new_key, new_cert)}).raise_for_status()

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "current.pem"), "w") as f:
    f.write(new_key_pem + new_cert.public_bytes(serialization.Encoding.PEM).decode())
print(thumbprint(new_cert))
