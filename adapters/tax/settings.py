"""Settings of the tax office adapter, read from `GATEWAY_TAX_*` environment variables.

The endpoint, the WS-Security credentials, the land office's signing key and certificate and the tax office's
certificate have no defaults: a gateway that signs with the wrong key, trusts the wrong certificate or submits
land dossiers to the wrong office is worse than one that refuses to start. Key and certificate files are read
and checked here (readable, PEM, the key matches its certificate), so a bad path is one line at start, not a
failure on the first dossier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Final, Self

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.urls import HttpUrl

CONTRACT_WSDL: Final = Path(__file__).resolve().parents[2] / "contracts" / "tax" / "tax-interconnect.v1.wsdl"
DAY_S: Final = 86_400.0


def _readable_file(path: Path, name: str) -> bytes:
    """The file's bytes, or a one-line error naming the setting and the path."""
    if not path.is_file():
        raise ValueError(f"{name} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{name} {path}: not readable by this user")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{name} {path}: cannot be read ({exc.strerror})") from None


def _certificate(path: Path, name: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_readable_file(path, name))
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name} {path}: not a PEM X.509 certificate") from None


class TaxSettings(BaseSettings):
    """Where and as whom the gateway talks to the tax office, with which keys, and how long it follows a dossier."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_TAX_", extra="ignore", frozen=True)

    base_url: Annotated[HttpUrl, Field(description="The SOAP endpoint, e.g. https://thue.example.vn/tax-interconnect/v1")]
    wsdl_path: Annotated[Path, Field(description="The WSDL (the contract's own unless the province adapts it)")] = (
        CONTRACT_WSDL
    )
    username: Annotated[str, Field(min_length=1, description="WS-Security UsernameToken user")]
    password: SecretStr = Field(description="WS-Security UsernameToken password")
    use_digest: bool = Field(
        default=False,
        description="Send the password as PasswordDigest (with nonce and time) instead of PasswordText over TLS; "
        "the tax office must support it",
    )
    timeout_s: Annotated[float, Field(gt=0, description="Total time allowed for one SOAP exchange")] = 30.0
    max_connections: Annotated[int, Field(ge=1, description="Connection pool size (total and per host)")] = 50

    signing_key_path: Path = Field(description="PEM private key of the land office: signs the transfer forms")
    signing_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted signing key")
    signing_cert_path: Path = Field(description="PEM certificate of that key: sent in KeyInfo")
    tax_office_cert_path: Path = Field(
        description="PEM certificate of the tax office: notices must verify against it (not the one in KeyInfo)"
    )
    office_code: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[0-9A-Za-z._-]{1,50}$")] = Field(
        description="The land office's code (MaCoQuan) as the tax office knows it: the office whose key signs"
    )

    max_response_bytes: Annotated[
        int, Field(ge=1024, description="A longer answer is refused unread (hostile or broken)")
    ] = 4 * 1024 * 1024
    max_xml_depth: Annotated[
        int, Field(ge=8, le=256, description="A deeper answer is refused (the contract needs fewer than 10 levels)")
    ] = 64

    # The follow-up: poll for the notice from first_poll_after_s after the receipt, then at poll_interval_s,
    # growing by poll_backoff_factor up to poll_interval_max_s; give up (an event) after the deadlines.
    first_poll_after_s: Annotated[float, Field(gt=0, description="First poll for the notice after the receipt")] = (
        600.0
    )
    poll_interval_s: Annotated[float, Field(gt=0, description="Wait between polls, at first")] = 900.0
    poll_backoff_factor: Annotated[float, Field(ge=1.0, le=10.0, description="Each wait is this much longer")] = 2.0
    poll_interval_max_s: Annotated[float, Field(gt=0, description="Longest wait between polls")] = 6 * 3600.0
    notice_deadline_s: Annotated[
        float, Field(gt=0, description="No notice this long after the receipt: tax.no_notice_by_deadline")
    ] = 30 * DAY_S
    payment_deadline_s: Annotated[
        float,
        Field(
            gt=0,
            description="No payment this long after the notice: tax.no_payment_by_deadline. Longer than the "
            "notices' own deadline (HAN_NOP), since a late payment still ends the obligation",
        ),
    ] = 60 * DAY_S

    @field_validator("wsdl_path")
    @classmethod
    def _wsdl_readable(cls, value: Path) -> Path:
        _readable_file(value, "wsdl_path")
        return value

    @field_validator("signing_cert_path", "tax_office_cert_path")
    @classmethod
    def _certificate_readable(cls, value: Path, info: ValidationInfo) -> Path:
        _certificate(value, info.field_name or "certificate")
        return value

    @model_validator(mode="after")
    def _key_matches_certificate(self) -> Self:
        data = _readable_file(self.signing_key_path, "signing_key_path")
        password = self.signing_key_password.get_secret_value().encode() if self.signing_key_password else None
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            raise ValueError(
                f"signing_key_path {self.signing_key_path}: the key is encrypted and no signing_key_password is "
                "set, or a password is set for a key that is not encrypted"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError(
                f"signing_key_path {self.signing_key_path}: not a PEM private key (or a wrong signing_key_password)"
            ) from None
        cert = _certificate(self.signing_cert_path, "signing_cert_path")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise ValueError(
                f"signing_key_path {self.signing_key_path} is not the key of signing_cert_path {self.signing_cert_path}"
            )
        return self

    @model_validator(mode="after")
    def _schedule_is_coherent(self) -> Self:
        if self.poll_interval_max_s < self.poll_interval_s:
            raise ValueError(
                f"poll_interval_max_s ({self.poll_interval_max_s}) must be at least poll_interval_s "
                f"({self.poll_interval_s})"
            )
        if self.notice_deadline_s <= self.first_poll_after_s:
            raise ValueError(
                f"notice_deadline_s ({self.notice_deadline_s}) must be after first_poll_after_s "
                f"({self.first_poll_after_s}): the follow-up would give up before its first poll"
            )
        return self

    @property
    def signing_key_pem(self) -> bytes:
        """The land office's private key, PEM (read when asked: it is not kept in the settings object)."""
        return self.signing_key_path.read_bytes()

    @property
    def signing_cert_pem(self) -> bytes:
        """The land office's certificate, PEM."""
        return self.signing_cert_path.read_bytes()

    @property
    def tax_office_cert_pem(self) -> bytes:
        """The tax office's certificate, PEM: what notices are verified against."""
        return self.tax_office_cert_path.read_bytes()

    @property
    def tax_office_cert_sha256(self) -> str:
        """SHA-256 of the tax office's certificate (DER), lower-case hex: what the ledger records as the signer."""
        cert = x509.load_pem_x509_certificate(self.tax_office_cert_pem)
        return cert.fingerprint(hashes.SHA256()).hex()
