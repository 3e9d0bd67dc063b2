"""Payment outcomes reach the tax office through topics: a payment.confirmed naming a tax notice, on the payment
events topic, ends in tax.obligation_fulfilled (confirmed_by payment_platform) on the tax events topic — with the
voucher's event id, so the tax office's own voucher later is the same fact. Adapters import nothing of each other."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from contracts.export import examples
from contracts.tax import tax_event_id
from tests.integration.portal_harness import produce
from tests.integration.postal_harness import dossier, read_until
from tests.integration.tax_harness import of_type, tax_gateway

pytestmark = pytest.mark.integration


def confirmed(code: str, notice: str | None) -> bytes:
    doc = dict(examples("payment/events")["payment.confirmed"], dossier_code=code, event_id=str(uuid.uuid4()))
    doc.pop("tax_notice_id", None)
    if notice is not None:
        doc["tax_notice_id"] = notice
    return json.dumps(doc).encode()


async def test_a_payment_confirmed_for_a_notice_fulfils_the_obligation_once(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    async with tax_gateway(kafka_bootstrap, tmp_path) as run:
        payments = run.events.replace("partner-events.tax.", "partner-events.payment.")
        code, other = dossier(1, day="240122"), dossier(2, day="240122")
        once = confirmed(code, "TB-20240122-000001")
        await produce(kafka_bootstrap, payments, [
            (code.encode(), once), (code.encode(), once),  # delivered twice
            (other.encode(), confirmed(other, None)),  # fees of a dossier without a tax notice: not the tax office's
        ])
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.obligation_fulfilled")))
        fulfilled = of_type(got, "tax.obligation_fulfilled")
        assert len(fulfilled) == 1
        fact = fulfilled[0]
        assert (fact["dossier_code"], fact["notice_id"], fact["confirmed_by"], fact["amount"]) == (
            code, "TB-20240122-000001", "payment_platform", 600_000)
        assert fact["event_id"] == str(tax_event_id("tax.obligation_fulfilled", code, "TB-20240122-000001"))
        assert not [m for m in got if m.get("dossier_code") == other]
