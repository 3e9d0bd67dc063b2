"""Throw-away RSA keys and self-signed certificates for the SOAP tests, made fresh by `cryptography`.

Nothing here is secret material: every key lives only for one test session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyPair:
    """A private key and its self-signed certificate, as PEM."""

    key_pem: bytes
    cert_pem: bytes
    common_name: str

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, directory: Path, stem: str, *, password: bytes | None = None) -> tuple[Path, Path]:
        """Write key and certificate files; the key encrypted with `password` when given."""
        key_path, cert_path = directory / f"{stem}.key.pem", directory / f"{stem}.cert.pem"
        key_pem = self.key_pem
        if password is not None:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password),
            )
        key_path.write_bytes(key_pem)
        cert_path.write_bytes(self.cert_pem)
        return key_path, cert_path


def make_key_pair(
    common_name: str,
    *,
    valid_from: datetime | None = None,
    valid_days: int = 30,
    elliptic: bool = False,
) -> KeyPair:
    """A fresh 2048-bit RSA (or P-256) key with a self-signed certificate for `common_name`."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = ec.generate_private_key(ec.SECP256R1()) if elliptic else rsa.generate_private_key(65537, 2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test only"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = valid_from or datetime.now(UTC) - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM), common_name=common_name)
