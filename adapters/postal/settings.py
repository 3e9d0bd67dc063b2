"""Settings of the public postal service adapter (VNPost), read from `GATEWAY_POSTAL_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.urls import HttpRoot


class PostalSettings(BaseSettings):
    """Where and as whom the gateway talks to the postal service (dịch vụ bưu chính công ích)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_POSTAL_", extra="ignore", frozen=True)

    # Credentials and addresses have no defaults: a gateway that books pickups with a wrong account or at a
    # wrong service is worse than one that refuses to start.
    base_url: Annotated[HttpRoot, Field(description="Service root, e.g. https://api.vnpost.vn")]
    client_key: Annotated[str, Field(min_length=1, description="OAuth2 client id (the user part of Basic)")]
    client_secret: SecretStr
    customer_code: Annotated[str, Field(min_length=1, description="Our CustomerCode, sent with every order")]

    token_path: str = "/oauth/token"  # noqa: S105 - a URL path, not a secret
    order_path: str = "/api/orders"
    cancel_path: str = "/api/orders/cancel"
    tracking_path: str = "/api/tracking"
    timeout_s: Annotated[float, Field(gt=0, description="Total time allowed for one HTTP exchange")] = 10.0
    max_connections: Annotated[int, Field(ge=1, description="Connection pool size (total and per host)")] = 50
    token_refresh_margin_s: Annotated[
        float, Field(ge=0, description="Refresh the access token this long before it expires")
    ] = 60.0

    # The service's StatusCode (compared as a string) → the partner event type the gateway reports. The real
    # code list is not public: 1-4 are OpenCPS's verified collection codes (1 registered, 2 collecting/picked
    # up, 3 delivered, 4 cancelled); 5-7 are our assumption, used by the simulator. This is configuration:
    # set GATEWAY_POSTAL_STATUS_EVENTS to a JSON object once the contract with the post office names them.
    status_events: dict[str, str] = {
        "1": "postal.order_created",
        "2": "postal.picked_up",
        "3": "postal.delivered",
        "4": "postal.cancelled",
        "5": "postal.in_transit",
        "6": "postal.delivery_failed",
        "7": "postal.returned",
    }
    # Codes after which an order moves no more (one real system treats 4 as final); each must be mapped above.
    final_codes: list[str] = ["3", "4", "7"]

    # Answer codes (the JSON `Code` of an answer) the real service's documentation does not give; assumed,
    # as the simulator speaks them. Compared as strings.
    success_codes: Annotated[list[str], Field(min_length=1)] = ["00", "0"]
    # "An order with this OrderNumber exists": the create is an idempotent repeat when its content matches.
    order_exists_codes: list[str] = ["ORDER_EXISTS"]
    # "The order is already cancelled": a repeated cancel, a success.
    already_cancelled_codes: list[str] = ["ORDER_CANCELLED"]

    @field_validator("token_path", "order_path", "cancel_path", "tracking_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @field_validator("status_events")
    @classmethod
    def _named_events(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned = {code.strip(): event.strip() for code, event in value.items()}
        if any(not code or not event for code, event in cleaned.items()):
            raise ValueError("status_events needs a non-empty status code and event type in every entry")
        return cleaned

    @model_validator(mode="after")
    def _final_codes_are_mapped(self) -> Self:
        unmapped = sorted(set(self.final_codes) - set(self.status_events))
        if unmapped:
            raise ValueError(f"final_codes {unmapped} are not keys of status_events")
        return self

    @property
    def token_url(self) -> str:
        """Full URL of the OAuth2 token endpoint."""
        return self.base_url + self.token_path

    @property
    def order_url(self) -> str:
        """Full URL of the create-order endpoint."""
        return self.base_url + self.order_path

    @property
    def cancel_url(self) -> str:
        """Full URL of the cancel-order endpoint."""
        return self.base_url + self.cancel_path

    @property
    def tracking_url(self) -> str:
        """Full URL of the tracking feed."""
        return self.base_url + self.tracking_path
