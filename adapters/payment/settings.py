"""Settings of the payment platform adapter, read from `GATEWAY_PAYMENT_*` environment variables.

The platform's address, our client id and both keys have no defaults: a gateway that signs with the wrong key
or accepts callbacks signed with one it should not trust is worse than one that refuses to start.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.urls import HttpRoot

DAY_S = 86_400.0


class PaymentSettings(BaseSettings):
    """Where and as whom the gateway asks the platform for payments, and how long it waits for them."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_PAYMENT_", extra="ignore", frozen=True)

    base_url: Annotated[HttpRoot, Field(description="The platform's API root, e.g. https://thanhtoan.example.vn")]
    client_id: Annotated[str, Field(min_length=1, max_length=50, description="Our client_id at the platform")]
    key_1: SecretStr = Field(description="HMAC key signing our requests (check_sum of create and inquiry)")
    key_2: SecretStr = Field(description="HMAC key the platform signs its callbacks and inquiry answers with")
    version: Annotated[str, Field(min_length=1, max_length=10)] = "1.0"
    return_url: Annotated[HttpRoot, Field(description="Where the payer's browser returns after paying")]
    create_path: str = "/api/v1/transactions"
    inquiry_path: str = "/api/v1/transactions/inquiry"
    timeout_s: Annotated[float, Field(gt=0, description="Total time allowed for one HTTP exchange")] = 10.0
    max_connections: Annotated[int, Field(ge=1, description="Connection pool size")] = 50

    # The VietQR a payer scans: the collecting account (the province's treasury account at its bank).
    bank_bin: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="Acquirer BIN of the account, e.g. 970415")]
    account: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,19}$", description="The collecting account")]

    callback_path: Annotated[str, Field(pattern=r"^/[a-z0-9/_-]{1,100}$")] = "/callbacks/payment/v1"
    callback_max_bytes: Annotated[int, Field(ge=256, le=1_048_576, description="A longer callback is refused")] = (
        16_384
    )
    # The inquiry: no callback this long after the request, ask the platform; again every inquiry_interval_s;
    # unpaid expire_after_s after the request: payment.expired.
    inquiry_after_s: Annotated[float, Field(gt=0)] = 900.0
    inquiry_interval_s: Annotated[float, Field(gt=0)] = 900.0
    expire_after_s: Annotated[float, Field(gt=0)] = 3 * DAY_S

    @field_validator("key_1", "key_2")
    @classmethod
    def _strong_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("an HMAC key must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _distinct_keys(self) -> Self:
        if self.key_1.get_secret_value() == self.key_2.get_secret_value():
            raise ValueError("key_1 and key_2 must differ: a leaked request key must not forge callbacks")
        if self.expire_after_s <= self.inquiry_after_s:
            raise ValueError("expire_after_s must be after inquiry_after_s")
        return self

    def key(self, n: int) -> str:
        """Key 1 (our requests) or key 2 (the platform's callbacks and answers)."""
        return (self.key_1 if n == 1 else self.key_2).get_secret_value()

    @property
    def create_url(self) -> str:
        return self.base_url + self.create_path

    @property
    def inquiry_url(self) -> str:
        return self.base_url + self.inquiry_path
