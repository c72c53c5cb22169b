"""Throwaway TLS material for the local HTTPS emulators.

Cloud SDKs such as ``azure-keyvault-keys`` refuse plain ``http://`` URLs, so every HTTPS emulator needs a
server certificate its clients can verify. :func:`ensure_tls_material` writes a private CA and a server
certificate for ``127.0.0.1`` / ``::1`` / ``localhost`` into a directory; clients trust the CA file
(``connection_verify=ca.pem`` for the Azure SDK, ``verify=ca.pem`` for requests) and never disable
verification.

Existing material in the directory is reused while it is valid, so that a developer who pointed a setting at
``ca.pem`` once keeps a working configuration across restarts of ``make run``.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Short enough that nobody mistakes it for a real CA, long enough for a long-lived dev state directory.
_VALIDITY = datetime.timedelta(days=365)
# Regenerate a little before expiry so a running emulator never serves an expired certificate.
_RENEW_MARGIN = datetime.timedelta(days=7)
_HOST_NAMES = ("localhost",)
_HOST_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsPaths:
    """Where the CA certificate, the server certificate (with chain) and the server key live."""

    ca: Path
    cert: Path
    key: Path


def ensure_tls_material(directory: str | os.PathLike[str]) -> TlsPaths:
    """Paths to a CA and a 127.0.0.1/localhost server certificate in ``directory``, created when needed."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    paths = TlsPaths(ca=base / "ca.pem", cert=base / "cert.pem", key=base / "key.pem")
    # Two emulators starting at once on one state dir must not mix one's CA with the other's certificate.
    with (base / ".tls.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _still_valid(paths):
            _generate(paths)
    return paths


def server_ssl_context(paths: TlsPaths) -> ssl.SSLContext:
    """A server-side context serving ``paths.cert``; TLS 1.2+ only, like the real endpoints."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(paths.cert), keyfile=str(paths.key))
    return context


def _still_valid(paths: TlsPaths) -> bool:
    if not (paths.ca.exists() and paths.cert.exists() and paths.key.exists()):
        return False
    try:
        certs = x509.load_pem_x509_certificates(paths.cert.read_bytes())
    except ValueError:
        return False
    deadline = datetime.datetime.now(datetime.UTC) + _RENEW_MARGIN
    return all(cert.not_valid_after_utc > deadline for cert in certs)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kodori local emulators"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _generate(paths: TlsPaths) -> None:
    # P-256 keys: generated in microseconds, unlike RSA, and accepted by every TLS client we use.
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Kodori emulator CA (throwaway, do not trust elsewhere)")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in _HOST_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _HOST_IPS]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    _write(paths.ca, ca_cert.public_bytes(pem))
    # The chain file carries the CA too, so clients that only trust the CA can build the path in any case.
    _write(paths.cert, server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_pem = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(paths.key, key_pem, mode=0o600)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    # Write then rename, so a concurrent reader (another emulator on the same dir) never sees half a file.
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)
