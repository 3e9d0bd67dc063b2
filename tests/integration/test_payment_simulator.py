"""The payment platform simulator over plain HTTP, as a partner without Python would speak to it: create
(signed, idempotent per transaction id), pay, inquiry (signed answer), statement."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from adapters.payment import mapping
from adapters.payment.simulator import CREATE_PATH, INQUIRY_PATH, VN, PaymentSimulator
from tests.integration.payment_harness import CLIENT_ID, KEY_1, KEY_2

pytestmark = pytest.mark.integration


def create_body(txn: str, amount: int, key: str = KEY_1) -> dict[str, object]:
    body: dict[str, object] = {"client_id": CLIENT_ID, "transaction_id": txn, "trans_amount": amount,
                               "addition_fee": 0, "command": "PAY", "version": "1.0",
                               "bill_info": {"MaHoSo": "000.00.01.H34-191215-0007"}}
    body["check_sum"] = mapping.check_sum(key, body, mapping.CREATE_SIGNED)
    return body


async def test_create_pay_inquire_and_read_the_statement() -> None:
    async with PaymentSimulator(client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2) as sim, aiohttp.ClientSession() as http:
        url = sim.base_url
        async with http.post(url + CREATE_PATH, json=create_body("T1", 5000)) as r:
            first = await r.json()
        async with http.post(url + CREATE_PATH, json=create_body("T1", 5000)) as r:
            again = await r.json()
        async with http.post(url + CREATE_PATH, json=create_body("T1", 6000)) as r:
            other = await r.json()
        async with http.post(url + CREATE_PATH, json=create_body("T2", 5000, key=KEY_2)) as r:
            forged = await r.json()
        assert first["error"] == "0" and again == first and other["error"] != "0" and forged["error"] == "01"
        assert sim.stats["created"] == 1 and sim.stats["create_repeats"] == 1
        async with http.post(url + "/pay/T1", data=b"{", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with http.post(url + "/pay/T1", json={"outcome": "paid"}) as r:
            assert (await r.json())["status"] == "0"
        inquiry = mapping.inquiry_request("T1", client_id=CLIENT_ID, key=KEY_1)
        async with http.post(url + INQUIRY_PATH, json=inquiry) as r:
            answer = await r.json()
        assert mapping.verify(KEY_2, answer, mapping.CALLBACK_SIGNED) and mapping.outcome(answer).paid
        day = datetime.now(UTC).astimezone(VN).date()
        async with http.get(f"{url}/api/v1/statements/{day.isoformat()}") as r:
            text = await r.text()
        assert text.splitlines()[0].startswith("transaction_id,") and text.splitlines()[1].startswith("T1,")

