"""Every adapter that joins the contract suite is listed here once.

`contract` runs a test for every adapter; `feed_contract` only for the adapters that have pulled feeds, and
`follow_up_contract` only for the adapters that follow up what their partner answers later (an adapter without
one is not parametrised into those tests at all, so it is neither skipped nor counted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.contract.adapter_contract import AdapterContract
from tests.contract.national_portal import NationalPortalContract
from tests.contract.payment import PaymentContract
from tests.contract.population_db import PopulationContract
from tests.contract.postal import PostalContract
from tests.contract.tax import TaxContract

CONTRACTS: dict[str, Callable[[], AdapterContract]] = {
    "national_portal": NationalPortalContract,
    "payment": PaymentContract,
    "postal": PostalContract,
    "tax": TaxContract,
    "population_db": PopulationContract,
}
WITH_FEEDS = sorted(name for name, make in CONTRACTS.items() if make().feeds)
WITH_FOLLOW_UPS = sorted(name for name, make in CONTRACTS.items() if make().follow_ups)


@pytest.fixture(params=sorted(CONTRACTS))
async def contract(request: pytest.FixtureRequest) -> AsyncIterator[AdapterContract]:
    c = CONTRACTS[request.param]()
    yield c
    await c.stop_simulator()


@pytest.fixture(params=WITH_FEEDS)
async def feed_contract(request: pytest.FixtureRequest) -> AsyncIterator[AdapterContract]:
    c = CONTRACTS[request.param]()
    yield c
    await c.stop_simulator()


@pytest.fixture(params=WITH_FOLLOW_UPS)
async def follow_up_contract(request: pytest.FixtureRequest) -> AsyncIterator[AdapterContract]:
    c = CONTRACTS[request.param]()
    yield c
    await c.stop_simulator()
