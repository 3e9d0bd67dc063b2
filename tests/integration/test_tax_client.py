"""The tax client against the tax simulator over real HTTP: signed submission once, verified notices, vouchers,
and every failure of the partner ending as the right class."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.tax import mapping
from adapters.tax.client import TaxClient
from adapters.tax.settings import TaxSettings
from adapters.tax.simulator import TaxSimulator
from contracts.export import examples
from contracts.tax import DetermineObligations, parse_tax_command
from gateway.errors import (
    HostileXml,
    PartnerProtocolError,
    PartnerRejected,
    PartnerUnavailable,
    SignatureInvalid,
    SignatureMissing,
)
from tests.tax_keys import land_office, stranger, write_pems

pytestmark = pytest.mark.integration


def tax_settings(sim: TaxSimulator, directory: Path, **overrides: object) -> TaxSettings:
    """Settings of a client of `sim`: the land office's key, the simulated tax office's certificate."""
    key, cert = write_pems(land_office(), directory, "land")
    office = directory / "tax-office.cert.pem"
    office.write_bytes(sim.tax_office.cert_pem)
    fields: dict[str, object] = dict(
        base_url=sim.endpoint_url, username="gateway", password="secret", signing_key_path=key,
        signing_cert_path=cert, tax_office_cert_path=office, office_code="000.00.10.H34", timeout_s=2.0,
    )
    fields.update(overrides)
    return TaxSettings(**fields)  # type: ignore[arg-type]


def the_command(code: str | None = None) -> DetermineObligations:
    doc = examples("tax")["tax.determine_obligations"]
    if code:
        doc["dossier_code"] = code
    return parse_tax_command(json.dumps(doc))


@pytest.fixture
async def sim() -> AsyncIterator[TaxSimulator]:
    simulator = TaxSimulator(land_office_cert=land_office().cert_pem)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: TaxSimulator, tmp_path: Path) -> AsyncIterator[TaxClient]:
    tax = TaxClient(tax_settings(sim, tmp_path))
    await tax.start()
    yield tax
    await tax.close()


async def _submit(client: TaxClient, command: DetermineObligations) -> mapping.Receipt:
    rid = mapping.request_id(command.dossier_code, command.sequence)
    sent = await client.submit(mapping.transfer_form(command), dossier_code=command.dossier_code, request_id=rid,
                               known=mapping.personal_values(command))
    assert len(sent.request_sha256) == 64 and len(sent.response_sha256) == 64
    return mapping.receipt(sent.answer)


async def test_a_signed_form_is_received_once_however_often_it_is_sent(sim: TaxSimulator, client: TaxClient) -> None:
    command = the_command()
    first = await _submit(client, command)
    again = await _submit(client, command)
    assert first.receipt_id == again.receipt_id
    assert sim.applied == [(command.dossier_code, mapping.request_id(command.dossier_code, 1))]  # verified, once


async def test_notices_are_read_from_their_verified_signature_and_paid_by_voucher(
    sim: TaxSimulator, client: TaxClient
) -> None:
    command = the_command()
    await _submit(client, command)
    assert (await client.notices(command.dossier_code))[1] == []  # not issued yet
    sim.issue_notice(command.dossier_code)
    _, notices = await client.notices(command.dossier_code)
    assert len(notices) == 1
    notice = notices[0]
    assert notice.items and all(item.amount > 0 for item in notice.items)
    assert len(notice.signer_sha256) == 64
    assert (await client.voucher(command.dossier_code, notice.notice_id))[1] is None
    sim.pay(command.dossier_code)
    _, paid = await client.voucher(command.dossier_code, notice.notice_id)
    assert paid is not None and paid.paid and paid.notice_id == notice.notice_id
    assert paid.amount == sum(item.amount for item in notice.items)


@pytest.mark.parametrize(
    ("knob", "error"), [("unsigned_notices", SignatureMissing), ("forged_notices", SignatureInvalid)]
)
async def test_a_notice_without_a_good_signature_is_refused(
    knob: str, error: type[Exception], sim: TaxSimulator, client: TaxClient
) -> None:
    command = the_command()
    await _submit(client, command)
    sim.set_knobs(**{knob: True})
    sim.issue_notice(command.dossier_code)
    with pytest.raises(error):
        await client.notices(command.dossier_code)


@pytest.mark.parametrize("payload", ["xxe", "billion_laughs", "external_dtd", "oversize"])
async def test_hostile_answers_are_refused_and_the_client_goes_on(
    payload: str, sim: TaxSimulator, client: TaxClient
) -> None:
    command = the_command()
    sim.set_knobs(hostile_next=payload)
    with pytest.raises(PartnerProtocolError) as caught:
        await _submit(client, command)
    assert isinstance(caught.value, HostileXml) or payload == "oversize"
    assert sim.dtd_fetches == 0
    assert (await _submit(client, command)).receipt_id  # the next call works; the submission was applied once
    assert len(sim.applied) == 1


async def test_partner_failures_are_classified(sim: TaxSimulator, client: TaxClient, tmp_path: Path) -> None:
    command = the_command()
    sim.set_knobs(reject_dossiers={command.dossier_code})
    with pytest.raises(PartnerRejected) as refused:
        await _submit(client, command)
    for value in mapping.personal_values(command):
        assert value not in refused.value.reason
    sim.set_knobs(reject_dossiers=set(), outage=True)
    with pytest.raises(PartnerUnavailable):
        await _submit(client, command)
    sim.set_knobs(outage=False, error_rate=1.0)
    with pytest.raises(PartnerUnavailable):  # a Server fault
        await _submit(client, command)
    sim.set_knobs(error_rate=0.0, latency_s=3.0)
    with pytest.raises(PartnerUnavailable):  # the client's timeout is 2 s
        await _submit(client, command)


async def test_a_form_signed_by_someone_else_is_refused_by_the_office(sim: TaxSimulator, tmp_path: Path) -> None:
    key, cert = write_pems(stranger(), tmp_path, "stranger")
    forger = TaxClient(tax_settings(sim, tmp_path, signing_key_path=key, signing_cert_path=cert))
    await forger.start()
    try:
        with pytest.raises(PartnerRejected):
            await _submit(forger, the_command())
    finally:
        await forger.close()
    assert sim.applied == []


async def test_an_organisation_identified_by_its_tax_code_alone_is_submitted(
    sim: TaxSimulator, client: TaxClient
) -> None:
    doc = examples("tax")["tax.determine_obligations"]
    doc["recipients"] = [{"full_name": "Công ty TNHH Đất Việt", "tax_code": "0101234567", "address": "1 Lê Lợi"}]
    command = parse_tax_command(json.dumps(doc))
    assert (await _submit(client, command)).receipt_id
    assert len(sim.applied) == 1
    sim.issue_notice(command.dossier_code)
    _, notices = await client.notices(command.dossier_code)
    assert "0101234567" in {item.tax_code for item in notices[0].items}  # the office read the organisation's code
