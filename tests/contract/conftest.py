"""Every adapter that joins the contract suite is listed here once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.adapter_contract import AdapterContract
from tests.contract.national_portal import NationalPortalContract

CONTRACTS = {"national_portal": NationalPortalContract}


@pytest.fixture(params=sorted(CONTRACTS))
async def contract(request: pytest.FixtureRequest) -> AsyncIterator[AdapterContract]:
    c: AdapterContract = CONTRACTS[request.param]()
    yield c
    await c.stop_simulator()
