"""The payment platform's wire format: check_sum over the documented field order, keys apart, constant-time
verification, the deterministic transaction id, callbacks read strictly."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date

import pytest

from adapters.payment import mapping
from contracts.export import examples
from contracts.payment import parse_payment_command

KEY_1, KEY_2 = "k1-0123456789abcdef", "k2-0123456789abcdef"


def test_create_check_sum_is_hmac_sha256_of_the_documented_order() -> None:
    command = parse_payment_command(json.dumps(examples("payment")["payment.collect_fees"]))
    body = mapping.create_request(command, client_id="c1", version="1.0", return_url="https://x.vn/r", key=KEY_1)
    text = f"0|c1|PAY|600000|{body['transaction_id']}|1.0"  # addition_fee|client_id|command|trans_amount|...|version
    assert body["check_sum"] == hmac.new(KEY_1.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert body["bill_info"]["SoCMNDNguoiNop"] == "051185001234" and len(body["bill_info"]["PhiLePhi"]) == 2
    assert sum(line["SoTien"] for line in body["bill_info"]["PhiLePhi"]) == body["trans_amount"]


def test_callback_check_sum_uses_key_2_and_its_own_fields() -> None:
    fields = {"transaction_id": "T1", "transaction_code": "NP1", "trans_amount": 5, "payment_fee": 0, "status": "0"}
    text = "0|0|5|NP1|T1"  # payment_fee|status|trans_amount|transaction_code|transaction_id
    signed = {**fields, "check_sum": hmac.new(KEY_2.encode(), text.encode(), hashlib.sha256).hexdigest()}
    assert mapping.verify(KEY_2, signed, mapping.CALLBACK_SIGNED)
    assert mapping.verify(KEY_2, {**signed, "check_sum": signed["check_sum"].upper()}, mapping.CALLBACK_SIGNED)
    assert not mapping.verify(KEY_1, signed, mapping.CALLBACK_SIGNED)  # a request key never signs a callback
    assert not mapping.verify(KEY_2, {**signed, "trans_amount": 6}, mapping.CALLBACK_SIGNED)
    assert not mapping.verify(KEY_2, {**signed, "check_sum": 7}, mapping.CALLBACK_SIGNED)
    assert not mapping.verify(KEY_2, fields, mapping.CALLBACK_SIGNED)


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def compare(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return a == b

    monkeypatch.setattr(mapping.hmac, "compare_digest", compare)
    mapping.verify(KEY_2, {"transaction_id": "T1", "check_sum": "ab"}, mapping.CALLBACK_SIGNED)
    assert len(seen) == 1


def test_transaction_id_is_deterministic_short_and_distinct() -> None:
    a = mapping.transaction_id("000.00.01.H34-191215-0007", "FR-1")
    assert a == mapping.transaction_id("000.00.01.H34-191215-0007", "FR-1")
    assert len(a) == 20 and a.isalnum() and a == a.upper()
    assert a != mapping.transaction_id("000.00.01.H34-191215-0007", "FR-2")
    assert a != mapping.transaction_id("000.00.01.H34-191215-0008", "FR-1")


def test_an_outcome_is_read_with_its_receipt() -> None:
    got = mapping.outcome({"transaction_id": "T1", "transaction_code": "NP1", "trans_amount": 5, "status": "0",
                           "URLBIENLAI": "https://b.vn/1.pdf", "SOBIENLAI": "BL1", "NGAYBIENLAI": "15/01/2024"})
    assert got.paid and got.receipt_date == date(2024, 1, 15) and got.receipt_number == "BL1"


@pytest.mark.parametrize("change", [{"trans_amount": "5"}, {"trans_amount": True}, {"trans_amount": -1},
                                    {"status": 0}, {"transaction_id": None}, {"URLBIENLAI": "ftp://x"},
                                    {"NGAYBIENLAI": "yesterday"}])
def test_a_wrong_field_is_unreadable(change: dict[str, object]) -> None:
    fields = {"transaction_id": "T1", "transaction_code": "NP1", "trans_amount": 5, "status": "0", **change}
    with pytest.raises(mapping.Unreadable):
        mapping.outcome(fields)
