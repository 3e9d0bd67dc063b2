"""Settings of the national public service portal adapter, read from `GATEWAY_PORTAL_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.dossier import OnlinePayment
from gateway.urls import HttpRoot


class PortalSettings(BaseSettings):
    """Where and as whom the gateway talks to the national portal (Cổng Dịch vụ công quốc gia)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_PORTAL_", extra="ignore", frozen=True)

    # Credentials and addresses have no defaults: a gateway that silently talks to a wrong portal, or logs in
    # as a placeholder user, is worse than one that refuses to start.
    base_url: Annotated[HttpRoot, Field(description="Portal root, e.g. https://dichvucong.gov.vn/adapter")]
    username: Annotated[str, Field(min_length=1)]
    password: SecretStr
    dstcode: Annotated[str, Field(min_length=1, description="Sent as the `dstcode` header at login")]
    madonvi: Annotated[str, Field(min_length=1, description="The province's unit code, sent with every call")]

    login_path: str = "/api/login"
    service_path: str = "/api/service"
    timeout_s: Annotated[float, Field(gt=0, description="Total time allowed for one HTTP exchange")] = 10.0
    max_connections: Annotated[int, Field(ge=1, description="Connection pool size (total and per host)")] = 200

    # Service names are configuration, not code: portal versions have renamed them before.
    service_sync_snapshot: str = "DongBoHoSoMC"
    service_update_progress: str = "CapNhatTienDoHoSoMC"
    service_lookup: str = "TraCuuHoSo"
    # Unverified: no public client code for the ratings service was found; the name is our best guess.
    service_sync_rating: str = "DongBoDanhGiaMC"

    # Portal versions disagree on the success code (0 in some, "00" in others); compared as strings.
    success_codes: Annotated[list[str], Field(min_length=1)] = ["0", "00"]
    # "The dossier already exists": one province's client reads 3 and -3 so and re-sends as an update (verified).
    already_exists_codes: list[str] = ["3", "-3"]
    # "The dossier does not exist" answered to an update (unverified: our simulator's 4): re-sent as a creation.
    not_found_codes: list[str] = ["4", "-4"]
    step_chunk_size: Annotated[int, Field(ge=1, le=100, description="Processing steps per CapNhatTienDoHoSoMC")] = 10
    # MaCSDL of the national population database, added to DSKetNoiCSDL when a population lookup is reported
    # (unverified code: take it from the portal's list).
    population_database_code: Annotated[str, Field(min_length=1, max_length=50)] = "CSDLQGDC"
    # Other partners whose events the portal's record reads (their `gateway.partner-events.<partner>.v1` topics):
    # a confirmed payment (DuocThanhToanTrucTuyen), a population lookup (DSKetNoiCSDL), a parcel (postal fields).
    react_to: list[Literal["payment", "population_db", "postal"]] = ["payment", "population_db", "postal"]
    # DuocThanhToanTrucTuyen of a payment the gateway's payment partner confirmed: 2 (the province's payment
    # platform) unless that partner is the national portal's own payment platform.
    confirmed_payments_as: OnlinePayment = OnlinePayment.PROVINCIAL_PLATFORM

    @field_validator("login_path", "service_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @property
    def login_url(self) -> str:
        """Full URL of the login endpoint."""
        return self.base_url + self.login_path

    @property
    def service_url(self) -> str:
        """Full URL of the service endpoint."""
        return self.base_url + self.service_path
