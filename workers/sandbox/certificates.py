"""The sandbox's own certificate authority and TLS server certificate.

The product verifies TLS on every provider connection, so the sandbox issues a server
certificate from a CA it generates and writes the CA to `ca.pem` in its state directory.
Pointing PUSH_CA_FILE at that file makes the product trust the sandbox.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

CA_FILE_NAME = "ca.pem"
CA_KEY_FILE_NAME = "ca-key.pem"
SERVER_CERT_FILE_NAME = "server.pem"
SERVER_KEY_FILE_NAME = "server-key.pem"

# The CA outlives many sandbox runs so that a product process started earlier keeps
# trusting a restarted sandbox; the server certificate is reissued on every start.
CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificatePaths:
    """Files that make up the sandbox's TLS identity."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path


def ensure_certificates(state_dir: Path) -> CertificatePaths:
    """Load or create the CA in `state_dir` and issue a fresh server certificate from it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_file = state_dir / CA_FILE_NAME
    ca_key_file = state_dir / CA_KEY_FILE_NAME

    if ca_file.exists() and ca_key_file.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"CA key in {ca_key_file} is not an EC key; delete it to regenerate")
    else:
        ca_cert, ca_key = _create_ca()
        _write_private(ca_key_file, _private_pem(ca_key))
        ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        logger.info("created sandbox CA in %s", ca_file)

    server_cert, server_key = _issue_server_certificate(ca_cert, ca_key)
    paths = CertificatePaths(
        ca_file=ca_file,
        server_cert_file=state_dir / SERVER_CERT_FILE_NAME,
        server_key_file=state_dir / SERVER_KEY_FILE_NAME,
    )
    paths.server_cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.server_key_file, _private_pem(server_key))
    return paths


def server_ssl_context(paths: CertificatePaths, alpn_protocols: list[str]) -> ssl.SSLContext:
    """Build a TLS 1.2+ server context offering `alpn_protocols` in order of preference."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.server_cert_file, paths.server_key_file)
    context.set_alpn_protocols(alpn_protocols)
    return context


def _create_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push-server sandbox CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _issue_server_certificate(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alternative_names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.IPAddress(ipaddress.IPv6Address("::1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(alternative_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
