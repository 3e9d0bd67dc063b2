"""Tax commands the one-stop system sends along generated journeys: a `tax.determine_obligations` for each land
dossier that reaches its financial-obligation step.

When: right after the journey's `dossier.financial_obligation_required`, the moment the land registration office
sends the cadastral transfer form to the tax office (the event's own reason says the information went to the tax
office; DOMAIN.md: land dossiers pause while the applicant fulfils the obligations). Not at receipt: most land
dossiers owe nothing (mortgage registrations never do, and the journeys already draw which transfers and first
registrations owe, `ProcedureSpec.obligation_share`), and a dossier refused before that step is never sent. So
the share follows the generator: about 13 % of all dossiers (259 of 2,000 with seed 2019, 5 of 30).

What: the procedure says the transaction (`TRANSACTION_OF`): a registration of change by transfer is a
`transfer` with a declared value and one or two transferors (the seller, maybe the seller's spouse); a first
registration, and land allocated to an organisation, is a `first_registration` with no transferor and no
declared value (the tax office prices the parcel itself). The recipient is the journey's applicant (a citizen's
personal ID number, or an organisation's tax code), with the applicant's spouse as co-recipient for some
citizens. The parcel and the other parties are synthetic, drawn from a seeded generator; commands are built
with validation, their ids derived from the causing event, so the same journeys always give the same commands.

Organisations come only when asked for (`organisations=True`, as the demo does): a party identified by its tax
code alone goes in the form's `MaSoThueToChuc`. In the journeys only land allocated to an organisation
(1.004177, 15 of 2,000 dossiers) is concerned.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from contracts.dossier import Applicant, ApplicantKind
from contracts.events import FinancialObligationRequired
from contracts.tax import DetermineObligations, LandOffice, Parcel, TaxParty, Transaction, TransactionKind
from gateway.loadgen import volumes
from gateway.loadgen.journeys import _FAMILY, _GIVEN, _MIDDLE, _STREETS, Journey

# The land registration office that signs the forms: the report's row of it (its synthetic agency_id).
LAND_OFFICE_CODE = "000.00.17.H55"
LAND_OFFICE_NAME = "Văn phòng Đăng ký đất đai tỉnh Quảng Ngãi"
# Procedure code → the transaction its form declares (the procedures of journeys.PROCEDURES that can owe).
TRANSACTION_OF = {
    "1.004227": TransactionKind.TRANSFER,  # registration of change by transfer
    "1.004257": TransactionKind.FIRST_REGISTRATION,  # first registration of land
    "1.004177": TransactionKind.FIRST_REGISTRATION,  # land allocated or leased to an organisation: its first title
}
# Assumptions (not in the report), kept here to tune.
SELLER_SPOUSE_SHARE = 0.5  # a transfer signed by the seller and the seller's spouse
BUYER_SPOUSE_SHARE = 0.4  # a citizen registered with his or her spouse as co-user of the land

_URBAN = ("phường", "thị trấn")


def _command_id(source_event_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"onestop/command/{source_event_id}/tax.determine_obligations")


class _Parties:
    """Synthetic people, addresses and parcels, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def address(self) -> str:
        ward, district = self.rng.choice(volumes.LOCALITIES)
        return f"{self.rng.randint(1, 399)} {self.rng.choice(_STREETS)}, {ward}, {district}, {volumes.PROVINCE_NAME}"

    def person(self, *, female: bool | None = None, address: str | None = None) -> TaxParty:
        rng = self.rng
        female = rng.random() < 0.5 if female is None else female
        g = 1 if female else 0
        name = f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE[g])} {rng.choice(_GIVEN[g])}"
        year = rng.randint(1945, 1999)  # adults, all born in the 1900s: century digit 0 (male) or 1 (female)
        province = (
            volumes.PROVINCE_ID_CODE if rng.random() < volumes.LOCAL_BIRTH_SHARE
            else rng.choice(volumes.OTHER_PROVINCE_ID_CODES)
        )
        id_number = f"{province}{g}{year % 100:02d}{rng.randrange(10**6):06d}"
        return TaxParty(full_name=name, id_number=id_number, address=address or self.address())

    def parcel(self, organisation: bool, received: datetime) -> Parcel:
        rng = self.rng
        ward, district = rng.choice(volumes.LOCALITIES)
        if organisation:
            area = round(rng.uniform(1_000, 20_000), 1)
            purpose, term = rng.choice(("SKC", "TMD")), f"Đến {received.date() + timedelta(days=50 * 365):%d-%m-%Y}"
        else:
            area = round(rng.uniform(50, 400), 1)
            purpose, term = ("ODT" if ward.startswith(_URBAN) else "ONT"), "Lâu dài"
        return Parcel(
            map_sheet=str(rng.randint(1, 60)), parcel_number=str(rng.randint(1, 999)), area_m2=area,
            address=f"Tổ {rng.randint(1, 12)}, {ward}, {district}, {volumes.PROVINCE_NAME}",
            land_use_purpose=purpose, land_use_term=term,
        )


def applicant_party(applicant: Applicant) -> TaxParty:
    """The dossier's applicant as the transaction's recipient (a citizen by ID number, an organisation by tax
    code)."""
    if applicant.address is None:
        raise ValueError("a tax form needs the applicant's address")  # the generator always gives one
    if applicant.kind is ApplicantKind.ORGANISATION:
        return TaxParty(full_name=applicant.full_name, tax_code=applicant.tax_code, address=applicant.address)
    return TaxParty(full_name=applicant.full_name, id_number=applicant.id_number, tax_code=applicant.tax_code,
                    address=applicant.address)


def tax_commands(
    journeys: Iterable[Journey], *, seed: int = 0, organisations: bool = False
) -> list[DetermineObligations]:
    """The tax commands of `journeys`, in journey order, each with `causation_id` = its obligation event; those of
    organisations only with `organisations` (see the module's docstring)."""
    gen = _Parties(random.Random(seed))
    rng = gen.rng
    office = LandOffice(code=LAND_OFFICE_CODE, name=LAND_OFFICE_NAME)
    out: list[DetermineObligations] = []
    for journey in journeys:
        cause = next((e for e in journey.events if isinstance(e, FinancialObligationRequired)), None)
        if cause is None:
            continue
        snapshot = cause.snapshot
        kind = TRANSACTION_OF.get(snapshot.procedure.code)
        if kind is None:
            raise ValueError(f"procedure {snapshot.procedure.code} owes obligations but declares no transaction")
        organisation = snapshot.applicant.kind is ApplicantKind.ORGANISATION
        recipient = applicant_party(snapshot.applicant)
        recipients = [recipient]
        # Every draw is made for every dossier, so one dossier's kind does not shift the others' draws.
        spouse, seller_spouse = rng.random() < BUYER_SPOUSE_SHARE, rng.random() < SELLER_SPOUSE_SHARE
        seller_female = rng.random() < 0.5
        seller = gen.person(female=seller_female)
        seller_partner = gen.person(female=not seller_female, address=seller.address)
        partner = gen.person(address=recipient.address)
        value = round(10 ** rng.uniform(8.3, 9.7), -6)  # VND, ≈ 200 million – 5 billion, whole millions
        if spouse and not organisation:
            recipients.append(partner)
        transferors: list[TaxParty] = []
        if kind is TransactionKind.TRANSFER:
            transferors = [seller, seller_partner] if seller_spouse else [seller]
        parcel = gen.parcel(organisation, snapshot.received_at)
        if organisation and not organisations:
            continue
        out.append(DetermineObligations(
            event_id=_command_id(cause.event_id), occurred_at=cause.occurred_at, dossier_code=cause.dossier_code,
            correlation_id=cause.correlation_id, causation_id=cause.event_id, land_office=office,
            transferors=tuple(transferors), recipients=tuple(recipients), parcel=parcel,
            transaction=Transaction(kind=kind, declared_value=int(value) if kind is TransactionKind.TRANSFER else 0),
        ))
    return out


def encode_command(command: DetermineObligations) -> bytes:
    """The command as the one-stop system publishes it: JSON, UTF-8."""
    return command.model_dump_json().encode()


__all__ = [
    "BUYER_SPOUSE_SHARE", "LAND_OFFICE_CODE", "LAND_OFFICE_NAME", "SELLER_SPOUSE_SHARE", "TRANSACTION_OF",
    "applicant_party", "encode_command", "tax_commands",
]
