#!/usr/bin/env python3
"""Independent verification of KeyRoll's cryptography with Python `cryptography` and PyJWT.

  crypto_check.py verify DIR   checks DIR/cert.pem, key.pem, combined.pem and the JWTs in DIR/tokens.json
  crypto_check.py sign DIR     makes a key + certificate in Python and signs JWTs for Swift to verify

Prints one JSON object on stdout. Never prints key material.
"""
import base64, hashlib, json, sys, time, uuid
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
import datetime

try:
    import jwt as pyjwt
except ImportError:  # PyJWT is optional; `cryptography` alone still verifies
    pyjwt = None


def b64u_decode(s):
    s = s.replace("=", "")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def verify_jws(token, public_key):
    """Verifies RS256/PS256 with `cryptography` directly: the reference implementation of RFC 7518."""
    h, p, s = token.split(".")
    header = json.loads(b64u_decode(h))
    sig = b64u_decode(s)
    data = (h + "." + p).encode()
    alg = header["alg"]
    pad = padding.PKCS1v15() if alg == "RS256" else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    try:
        public_key.verify(sig, data, pad, hashes.SHA256())
        ok = True
    except Exception:
        ok = False
    result = {"cryptography": ok, "header": header, "claims": json.loads(b64u_decode(p)),
              "padded": "=" in token}
    if pyjwt is not None:
        try:
            pyjwt.decode(token, public_key, algorithms=[alg],
                         options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False})
            result["pyjwt"] = True
        except Exception as e:
            result["pyjwt"] = False
            result["pyjwt_error"] = type(e).__name__
    return result


def verify(d):
    out = {}
    pem = open(f"{d}/cert.pem", "rb").read()
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    out["sha1"] = hashlib.sha1(der).hexdigest().upper()
    out["sha256"] = hashlib.sha256(der).hexdigest().upper()
    out["x5t"] = b64u(hashlib.sha1(der).digest())
    out["x5t#S256"] = b64u(hashlib.sha256(der).digest())
    out["subject"] = cert.subject.rfc4514_string()
    out["not_before"] = int(cert.not_valid_before_utc.timestamp())
    out["not_after"] = int(cert.not_valid_after_utc.timestamp())
    out["version"] = cert.version.name
    out["signature_hash"] = cert.signature_hash_algorithm.name
    out["serial_bits"] = cert.serial_number.bit_length()
    bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    out["basic_constraints_ca"] = bc.value.ca
    ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    out["key_usage_digital_signature"] = ku.digital_signature
    out["key_usage_key_cert_sign"] = ku.key_cert_sign
    ski = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    out["ski_matches_key"] = ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    try:
        cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        out["self_signature_ok"] = True
    except Exception:
        out["self_signature_ok"] = False
    pub_numbers = cert.public_key().public_numbers()
    out["key_bits"] = cert.public_key().key_size
    for name in ("key.pem", "combined.pem"):
        try:
            k = serialization.load_pem_private_key(open(f"{d}/{name}", "rb").read(), password=None)
            out[f"{name}_matches_cert"] = k.public_key().public_numbers() == pub_numbers
        except Exception as e:
            out[f"{name}_matches_cert"] = False
            out[f"{name}_error"] = type(e).__name__
    # combined.pem must also parse as a certificate, as azure-identity's CertificateCredential does
    out["combined.pem_has_cert"] = x509.load_pem_x509_certificate(open(f"{d}/combined.pem", "rb").read()) == cert
    try:
        tokens = json.load(open(f"{d}/tokens.json"))
    except FileNotFoundError:
        tokens = {}
    out["tokens"] = {name: verify_jws(tok, cert.public_key()) for name, tok in tokens.items()}
    return out


def sign(d):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "python-peer")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    open(f"{d}/py_cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{d}/py_key.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    t = time.time()
    claims = {"aud": "https://login.example/t/oauth2/v2.0/token", "iss": "client", "sub": "client",
              "jti": str(uuid.uuid4()), "iat": t, "exp": t + 600}

    def manual(alg, header, claims, pad_segments):
        enc = (lambda b: base64.urlsafe_b64encode(b).decode()) if pad_segments else b64u
        h = enc(json.dumps(header).encode())
        p = enc(json.dumps(claims).encode())
        pad = padding.PKCS1v15() if alg == "RS256" else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        s = key.sign((h + "." + p).encode(), pad, hashes.SHA256())
        return h + "." + p + "." + enc(s)

    tokens = {
        # what MSAL Python sends: RS256 + padded x5t, float dates, no nbf
        "msal_rs256": manual("RS256", {"alg": "RS256", "typ": "JWT", "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode()}, claims, False),
        # azure-identity aio: PS256 with padded segments
        "aio_ps256_padded": manual("PS256", {"typ": "JWT", "alg": "PS256", "x5t#S256": b64u(hashlib.sha256(der).digest())},
                                   {**claims, "nbf": int(t), "exp": int(t) + 1800, "iat": None}, True),
        # MSAL.NET: string dates
        "msalnet_ps256_string_dates": manual("PS256", {"alg": "PS256", "typ": "JWT", "x5t#S256": b64u(hashlib.sha256(der).digest())},
                                             {**claims, "nbf": str(int(t)), "exp": str(int(t) + 600)}, False),
    }
    if pyjwt is not None:
        tokens["pyjwt_rs256"] = pyjwt.encode(claims, key, algorithm="RS256", headers={"x5t": b64u(hashlib.sha1(der).digest())})
        tokens["pyjwt_ps256"] = pyjwt.encode(claims, key, algorithm="PS256", headers={"x5t#S256": b64u(hashlib.sha256(der).digest())})
    return {"tokens": tokens, "now": t, "pyjwt": pyjwt is not None}


if __name__ == "__main__":
    cmd, d = sys.argv[1], sys.argv[2]
    print(json.dumps(verify(d) if cmd == "verify" else sign(d)))
