"""VietQR payloads: EMVCo merchant-presented TLV (NAPAS, to-account) with its CRC-16/CCITT-FALSE.

    00 02 "01"                      payload format indicator
    01 02 "12"                      point of initiation: 12 dynamic (with an amount), 11 static
    38 .. { 00 "A000000727"          NAPAS GUID
            01 .. { 00 BIN (6 digits), 01 account }   beneficiary
            02 "QRIBFTTA" }          service: to an account (QRIBFTTC: to a card)
    53 03 "704"                     VND
    54 .. amount                    whole đồng (dynamic only)
    58 02 "VN"
    62 .. { 08 purpose }            ASCII, at most 25 characters (the dossier code)
    63 04 CRC                       over everything before it, "6304" included; 4 upper-case hex digits

Pure functions: `build` for the gateway's payment.requested, `parse` for tests and the simulator.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

NAPAS_GUID: Final = "A000000727"
TO_ACCOUNT: Final = "QRIBFTTA"
TO_CARD: Final = "QRIBFTTC"
MAX_PURPOSE: Final = 25
_BIN = re.compile(r"^[0-9]{6}$")
_ACCOUNT = re.compile(r"^[0-9A-Za-z]{1,19}$")


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def tlv(tag: str, value: str) -> str:
    """One data object: two-digit id, two-digit length, value (at most 99 characters)."""
    if len(tag) != 2 or not tag.isdigit():
        raise ValueError(f"a VietQR id is two digits, got {tag!r}")
    if not 0 < len(value) <= 99:
        raise ValueError(f"VietQR object {tag}: value must be 1..99 characters, got {len(value)}")
    return f"{tag}{len(value):02d}{value}"


def ascii_purpose(text: str) -> str:
    """`text` as a payer's bank shows it: diacritics removed (đ → d), printable ASCII, at most 25 characters."""
    folded = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    plain = "".join(c for c in folded if c.isascii() and c.isprintable())
    return " ".join(plain.split())[:MAX_PURPOSE].strip()


def with_crc(body: str) -> str:
    """`body` (without object 63) closed by its CRC object."""
    head = body + "6304"
    return head + f"{crc16_ccitt_false(head.encode('ascii')):04X}"


def build(*, bank_bin: str, account: str, amount: int | None, purpose: str = "", service: str = TO_ACCOUNT) -> str:
    """The payload a payer scans: dynamic with `amount` (whole đồng), static without."""
    if not _BIN.fullmatch(bank_bin):
        raise ValueError("the acquirer BIN is 6 digits, e.g. 970415")
    if not _ACCOUNT.fullmatch(account):
        raise ValueError("the account is 1..19 letters or digits")
    if service not in (TO_ACCOUNT, TO_CARD):
        raise ValueError(f"service must be {TO_ACCOUNT} or {TO_CARD}")
    if amount is not None and not 0 < amount < 10**13:
        raise ValueError("the amount is a positive whole number of đồng, below 10^13")
    beneficiary = tlv("00", bank_bin) + tlv("01", account)
    merchant = tlv("00", NAPAS_GUID) + tlv("01", beneficiary) + tlv("02", service)
    body = tlv("00", "01") + tlv("01", "11" if amount is None else "12") + tlv("38", merchant) + tlv("53", "704")
    if amount is not None:
        body += tlv("54", str(amount))
    body += tlv("58", "VN")
    shown = ascii_purpose(purpose)
    if shown:
        body += tlv("62", tlv("08", shown))
    return with_crc(body)


def objects(text: str) -> dict[str, str]:
    """The data objects of one TLV level, by id; ValueError when the lengths do not add up."""
    found: dict[str, str] = {}
    at = 0
    while at < len(text):
        tag, size = text[at:at + 2], text[at + 2:at + 4]
        if len(tag) != 2 or not tag.isdigit() or len(size) != 2 or not size.isdigit():
            raise ValueError(f"malformed VietQR object at {at}")
        end = at + 4 + int(size)
        if end > len(text):
            raise ValueError(f"VietQR object {tag} runs past the end")
        found[tag] = text[at + 4:end]
        at = end
    return found


def parse(payload: str) -> dict[str, str]:
    """Read a payload back (CRC checked): bin, account, service, amount ("" if static), purpose, method."""
    if len(payload) < 8 or payload[-8:-4] != "6304" or with_crc(payload[:-8]) != payload:
        raise ValueError("VietQR payload without a valid CRC")
    top = objects(payload[:-8])
    merchant = objects(top["38"])
    beneficiary = objects(merchant["01"])
    if merchant.get("00") != NAPAS_GUID:
        raise ValueError("not a NAPAS VietQR (GUID)")
    return {
        "method": top["01"], "bin": beneficiary["00"], "account": beneficiary["01"], "service": merchant["02"],
        "currency": top["53"], "amount": top.get("54", ""), "country": top["58"],
        "purpose": objects(top["62"]).get("08", "") if "62" in top else "",
    }
