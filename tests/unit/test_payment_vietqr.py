"""VietQR payloads against known-good ones published by others, and the CRC on its reference check value.

Where each known-good payload comes from:
- SUBIZ: github.com/subiz/vietqr, README.md (`vietqr.Generate(120000, "970415", "0011001932418", "ủng hộ lũ lụt")`);
  the purpose is written without diacritics, as we write it.
- ANYLEARN: a public PHP unit test (QRServiceTest::testQR1, in the code search corpus; its repository is not
  named there): BIN 970416, account 545446, 80 100 VND, "Thanh toan anyLEARN 8", CRC FA27.
- PAYOS: a payOS payment link's QR (pay.payos.vn) stored in a public SQL dump (code search corpus): BIN 970422,
  account VQRQADAIJ5512, 7 000 VND, "TL89 100", CRC E346.
- SAMPLE_INVOICE: a sample invoice's transfer block ("chuoi") in a public Vietnamese document (code search
  corpus): BIN 970436, account 1023456789, 1 943 000 VND, "TT000069", CRC A8E5.
- QRIBFTTC_CRC: the same PHP test (testCRC1): a to-card payload's CRC is A203.
"""

from __future__ import annotations

import pytest

from adapters.payment.vietqr import TO_CARD, ascii_purpose, build, crc16_ccitt_false, parse

SUBIZ = ("00020101021238570010A00000072701270006970415011300110019324180208QRIBFTTA530370454061200005802VN6217"
         "0813ung ho lu lut6304C15C")
ANYLEARN = ("00020101021238500010A0000007270120000697041601065454460208QRIBFTTA53037045405801005802VN62250821Thanh "
            "toan anyLEARN 86304FA27")
PAYOS = ("00020101021238570010A000000727012700069704220113VQRQADAIJ55120208QRIBFTTA5303704540470005802VN62120808TL89"
         " 1006304E346")
SAMPLE_INVOICE = ("00020101021238540010A00000072701240006970436011010234567890208QRIBFTTA5303704540719430005802VN6212"
                  "0808TT0000696304A8E5")
QRIBFTTC_CRC = ("00020101021238600010A00000072701300006970403011697040311012345670208QRIBFTTC530370454061800005802VN"
                "62340107NPS68690819thanh toan don hang6304", 0xA203)


@pytest.mark.parametrize(
    ("expected", "bank_bin", "account", "amount", "purpose"),
    [
        (SUBIZ, "970415", "0011001932418", 120_000, "ủng hộ lũ lụt"),
        (ANYLEARN, "970416", "545446", 80_100, "Thanh toan anyLEARN 8"),
        (PAYOS, "970422", "VQRQADAIJ5512", 7_000, "TL89 100"),
        (SAMPLE_INVOICE, "970436", "1023456789", 1_943_000, "TT000069"),
    ],
    ids=["subiz", "anylearn", "payos", "invoice"],
)
def test_build_gives_the_published_payload(expected: str, bank_bin: str, account: str, amount: int,
                                           purpose: str) -> None:
    assert build(bank_bin=bank_bin, account=account, amount=amount, purpose=purpose) == expected
    read = parse(expected)
    assert (read["bin"], read["account"], read["amount"], read["method"]) == (bank_bin, account, str(amount), "12")


def test_crc_is_ccitt_false() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1  # the catalogue's check value of CRC-16/CCITT-FALSE
    payload, crc = QRIBFTTC_CRC
    assert crc16_ccitt_false(payload.encode()) == crc


def test_static_payload_has_no_amount_and_a_card_service() -> None:
    payload = build(bank_bin="970403", account="9704031101234567", amount=None, service=TO_CARD)
    read = parse(payload)
    assert read["method"] == "11" and read["amount"] == "" and read["service"] == TO_CARD


def test_a_changed_character_breaks_the_crc() -> None:
    tampered = SUBIZ.replace("54061200005802", "54061900005802")
    with pytest.raises(ValueError, match="CRC"):
        parse(tampered)


def test_purpose_is_ascii_and_at_most_25() -> None:
    assert ascii_purpose("Nộp lệ phí hồ sơ đất đai số 000.00.10.H34-240115-0012") == "Nop le phi ho so dat dai"
    assert ascii_purpose("000.00.10.H34-240115-0012") == "000.00.10.H34-240115-0012"


@pytest.mark.parametrize("kwargs", [dict(bank_bin="97041", account="1", amount=1), dict(bank_bin="970415",
                         account="1-2", amount=1), dict(bank_bin="970415", account="1", amount=0)])
def test_bad_inputs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build(**kwargs)  # type: ignore[arg-type]
