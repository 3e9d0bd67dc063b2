"""The tax adapter's fixtures for the shared contract suite.

Its inputs are `tax.determine_obligations` commands built from the published example, one per dossier (sequence
1, so MaYeuCau `<dossier>-NVTC1`). Its effects are the simulator's applied submissions; the simulator never
applies one MaYeuCau twice (a repeat is answered with the same receipt), so a second effect is a submission
applied again or one no input asked for (another MaYeuCau for a dossier counts there too). It fails retryably
with an outage (HTTP 503) and for good by refusing dossiers (HO_SO_BI_TU_CHOI).

Its follow-up: after the submission the gateway polls for the dossier's notice, then for the payment voucher; the
partner answers later when the test issues the notice (`answer()`), then pays it (`answer()` again). The
simulator is told neither delay, so nothing arrives by itself; its schedule is shrunk from minutes and days to
fractions of a second, with deadlines far beyond a test.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.tax.mapping import request_id
from adapters.tax.simulator import NOTICES, SERVICE_PATH, VOUCHER, TaxSimulator
from contracts.tax import PARTNER, tax_event_id
from tests.contract.adapter_contract import (
    SCHEMAS,
    Answer,
    FollowUpEntry,
    Input,
    Inputs,
    PartnerContract,
    read_answer,
)
from tests.integration.postal_harness import dossier
from tests.integration.tax_harness import command
from tests.integration.test_tax_client import tax_settings
from tests.tax_keys import land_office, write_pems

# The tax office's rhythm for the suite: the first poll soon after the receipt, then twice a second; deadlines
# no test reaches (a give-up event would be an answer the partner never gave).
SCHEDULE: Final[Mapping[str, float]] = {
    "first_poll_after_s": 0.2,
    "poll_interval_s": 0.5,
    "poll_backoff_factor": 1.0,
    "poll_interval_max_s": 0.5,
    "notice_deadline_s": 3600.0,
    "payment_deadline_s": 3600.0,
}
MAX_IN_FLIGHT: Final = 4
CREDENTIALS: Final = {"username": "gateway", "password": "secret", "office_code": "000.00.10.H34"}
NOTICE_ISSUED: Final = "tax.notice_issued"
FULFILLED: Final = "tax.obligation_fulfilled"
GAVE_UP: Final = frozenset({"tax.no_notice_by_deadline", "tax.no_payment_by_deadline", "tax.follow_up_failed"})


def _request_id(code: str) -> str:
    return request_id(code, 1)


def _entry(answer: str, event_type: str, code: str, notice_id: str) -> FollowUpEntry:
    """A notice's answer, under the id contracts.tax gives both its events (the dossier and the notice)."""
    return FollowUpEntry(answer, event_type, str(tax_event_id(event_type, code, notice_id)))


class NoticeAndPaymentContract:
    """The tax follow-up: a submitted dossier's notice (LayThongBaoThue), then its payment (LayChungTuNopTien)."""

    name = "tax.notice+payment"
    event_types: frozenset[str] = frozenset({NOTICE_ISSUED, FULFILLED})

    def __init__(self, contract: TaxContract) -> None:
        self._contract = contract

    def answer(self) -> int:
        """Every submitted dossier one step on: a notice issued if it has none, else its notices paid."""
        sim = self._contract.simulator
        given = 0
        for code in sorted(sim.dossiers):
            if not sim.notices(code):
                sim.issue_notice(code)
                given += 1
            elif not sim.paid(code):
                sim.pay(code)
                given += 1
        return given

    def answered(self) -> list[FollowUpEntry]:
        """Each issued notice, and each paid one, under the event id contracts.tax gives it (dossier and notice)."""
        sim = self._contract.simulator
        out: list[FollowUpEntry] = []
        for code in sorted(sim.dossiers):
            notices = sim.notices(code)
            out += [_entry(f"notice {n}", NOTICE_ISSUED, code, n) for n in notices]
            if sim.paid(code):
                out += [_entry(f"payment of {n}", FULFILLED, code, n) for n in notices]
        return out

    def answer_of(self, message: Mapping[str, Any]) -> str | None:
        kind = message.get("event_type")
        if kind == NOTICE_ISSUED:
            return f"notice {message['notice_id']}"
        if kind == FULFILLED:
            return f"payment of {message['notice_id']}"
        return None

    def gave_up(self, message: Mapping[str, Any]) -> bool:
        return message.get("event_type") in GAVE_UP

    def asked(self) -> int:
        requests = self._contract.simulator.requests
        return requests[NOTICES] + requests[VOUCHER]


class TaxContract(PartnerContract[TaxSimulator]):
    name = PARTNER

    def __init__(self) -> None:
        super().__init__()
        self._keys: Path | None = None  # the land office's key and certificate, the tax office's certificate
        self._expected: set[tuple[str, str]] = set()  # (MaHoSo, MaYeuCau) of every submission some input asked for
        self.follow_ups = (NoticeAndPaymentContract(self),)

    @property
    def output_schema(self) -> Path:
        return SCHEMAS / "tax-event.v1.json"

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = TaxSimulator(land_office_cert=land_office().cert_pem, **knobs)
        self._keys = Path(tempfile.mkdtemp(prefix="contract-tax-"))
        return await self.sim.start()

    async def stop_simulator(self) -> None:
        await super().stop_simulator()
        if self._keys is not None:
            shutil.rmtree(self._keys, ignore_errors=True)

    def inputs(self, count: int, seed: int) -> Inputs:
        """One command per dossier; ids derived from the seed."""
        assert 0 < count < 100, "dossier numbers are <seed % 100><two digits>"
        codes = [dossier((seed % 100) * 100 + n) for n in range(1, count + 1)]
        items = []
        for code in codes:
            event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"contract/tax/{seed}/{code}")
            items.append(Input(code, str(event_id), code.encode(), command(code, event_id=event_id)))
        self._expected.update((code, _request_id(code)) for code in codes)
        return Inputs(tuple(items), detail=codes)

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        return read_answer(self.reads, message)

    def undelivered(self, inputs: Inputs) -> list[str]:
        applied = set(self.simulator.applied)
        return [code for code in inputs.dossiers if (code, _request_id(code)) not in applied]

    def effects(self) -> int:
        return len(self.simulator.applied)

    def duplicate_effects(self) -> int:
        applied = Counter(self.simulator.applied)
        again = sum(n - 1 for n in applied.values())
        unasked = sum(1 for submission in applied if submission not in self._expected)
        return again + unasked

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        if retryable:
            self.simulator.set_knobs(outage=True)
        else:
            self.simulator.set_knobs(reject_dossiers=list(dossiers or []))

    def heal(self) -> None:
        self.simulator.set_knobs(outage=False, reject_dossiers=[])

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        assert self._keys is not None, "simulator not started"
        settings = tax_settings(self.simulator, self._keys, base_url=base_url + SERVICE_PATH, **SCHEDULE)
        return {self.name: settings}

    def environment(self, base_url: str) -> dict[str, str]:
        assert self._keys is not None, "simulator not started"
        key, cert = write_pems(land_office(), self._keys, "land")
        office = self._keys / "tax-office.cert.pem"
        office.write_bytes(self.simulator.tax_office_cert_pem)
        env = {f"GATEWAY_TAX_{k.upper()}": v for k, v in CREDENTIALS.items()}
        env |= {f"GATEWAY_TAX_{k.upper()}": str(v) for k, v in SCHEDULE.items()}
        return env | {
            "GATEWAY_TAX_BASE_URL": base_url + SERVICE_PATH,
            "GATEWAY_TAX_SIGNING_KEY_PATH": str(key),
            "GATEWAY_TAX_SIGNING_CERT_PATH": str(cert),
            "GATEWAY_TAX_TAX_OFFICE_CERT_PATH": str(office),
            "GATEWAY_TAX_TIMEOUT_S": "2.0",
            # A child gateway takes a few commands at a time: the tax office applies a whole burst of signed forms
            # before the gateway has read ten of its answers, so a kill at the 10th answer (the shared kill test)
            # would find every submission applied and prove nothing.
            "GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        }
