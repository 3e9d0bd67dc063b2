"""Settings of the population database adapter, read from `GATEWAY_POPULATION_DB_*` environment variables.

The endpoint, the exchange platform's credentials and the access log's hash key have no defaults: a gateway that
looks people up at the wrong address, or logs them under a guessable hash, is worse than one that refuses to
start. The purpose policy and the rate limits have defaults: verification only (no address) for every purpose not
configured otherwise; 30 lookups a minute per officer, 600 per agency, 50 a second toward the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from limits import parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.population import CODE_PATTERN, PURPOSE_PATTERN, CitizenField
from gateway.urls import HttpUrl

CONTRACT_WSDL: Final = Path(__file__).resolve().parents[2] / "contracts" / "population" / "population.v1.wsdl"
_ADDRESSES: Final = [CitizenField.PERMANENT_ADDRESS, CitizenField.CURRENT_ADDRESS]


def default_purposes() -> dict[str, list[CitizenField]]:
    """Purposes known out of the box: most need verification only; registering a household needs addresses."""
    return {
        "identity_verification": [],
        "civil_status": [],
        "land_registration": [],
        "social_assistance": [CitizenField.GENDER],
        "household_registration": [*_ADDRESSES, CitizenField.GENDER, CitizenField.NATIONALITY],
    }


class PopulationSettings(BaseSettings):
    """Where and as whom the gateway asks the population database, what each purpose may see, and how often."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_POPULATION_DB_", extra="ignore", frozen=True)

    base_url: Annotated[HttpUrl, Field(description="The SOAP endpoint at NDXP/LGSP, e.g. https://ndxp.example.vn/dancu")]
    wsdl_path: Path = Field(default=CONTRACT_WSDL, description="The WSDL (the contract's own unless adapted)")
    username: Annotated[str, Field(min_length=1, description="The gateway's account at the exchange platform")]
    secret: SecretStr = Field(description="The account's secret: Basic username:SHA256(url+username+timestamp+secret)")
    service_code: Annotated[str, Field(pattern=CODE_PATTERN, description="MaDVC: the public service code")]
    integration_code: Annotated[str, Field(pattern=CODE_PATTERN, description="MaTichHop")] = "037"
    access_log_key: SecretStr = Field(
        description="HMAC key of the access log's hash of ID numbers (at least 32 characters; auditors hold it too)"
    )
    timeout_s: Annotated[float, Field(gt=0, description="Total time allowed for one SOAP exchange")] = 10.0
    max_connections: Annotated[int | None, Field(ge=1, description="Pool size (default: max in flight)")] = None
    max_response_bytes: Annotated[int, Field(ge=1024, description="A longer answer is refused unread")] = 1024 * 1024
    max_xml_depth: Annotated[int, Field(ge=8, le=256, description="A deeper answer is refused")] = 64

    purposes: dict[str, list[CitizenField]] = Field(
        default_factory=default_purposes,
        description="Purpose → fields beyond match/mismatch it allows (JSON in the environment); [] verification only",
    )
    refused_purposes: list[str] = Field(default_factory=list, description="Purposes refused outright")
    refuse_unlisted_purposes: bool = Field(
        default=False, description="Refuse a purpose not in `purposes` (default: verification only)"
    )
    per_officer_limit: str = Field(default="30/minute", description="Lookups per officer (limits notation)")
    per_agency_limit: str = Field(default="600/minute", description="Lookups per agency (limits notation)")
    partner_quota: str = Field(default="50/second", description="Calls toward the database (its published quota)")

    @field_validator("wsdl_path")
    @classmethod
    def _wsdl_readable(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"wsdl_path {value}: no such file")
        return value

    @field_validator("access_log_key")
    @classmethod
    def _long_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("access_log_key must be at least 32 characters")
        return value

    @field_validator("purposes")
    @classmethod
    def _purpose_codes(cls, value: dict[str, list[CitizenField]]) -> dict[str, list[CitizenField]]:
        import re

        bad = [p for p in value if re.fullmatch(PURPOSE_PATTERN, p) is None]
        if bad:
            raise ValueError(f"purposes: codes must match {PURPOSE_PATTERN}: {', '.join(sorted(bad))}")
        return value

    @field_validator("per_officer_limit", "per_agency_limit", "partner_quota")
    @classmethod
    def _limit(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as 30/minute") from None
        return value
