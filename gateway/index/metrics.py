"""The service-index figures as Prometheus gauges: the current year's, per agency and for the whole province.

Labels are indicator keys, agency codes (public identifiers of agencies) and the year: no personal data. The
year is that of the most recently received dossier the gateway knows (Vietnam's calendar), so a replay of an
old year shows that year. Formulas transcribed, not official (gateway.index.figures.NOTE).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Final

from prometheus_client import CollectorRegistry, Gauge

from gateway.index.figures import IndexReport, compute
from gateway.store.service_index import IndexRow, ServiceIndexStore

VIETNAM: Final = timezone(timedelta(hours=7), "ICT")
ALL: Final = "all"  # the agency label of the whole province's figures
EVERY_S: Final = 60.0  # a year of dossiers is recomputed at most once a minute


class IndexGauges:
    """`gateway_service_index_share`, `_points`, `_dossiers`; replaced whole at every sample."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["indicator", "agency", "year"]
        self.share = Gauge(
            "gateway_service_index_share",
            "Service-index figure (0..1) of dossiers received this year; formulas transcribed, not official",
            labels, registry=registry,
        )
        self.points = Gauge(
            "gateway_service_index_points",
            "Points the figure projects to (transcribed formulas, not official)", labels, registry=registry,
        )
        self.dossiers = Gauge(
            "gateway_service_index_dossiers", "Dossiers received this year the gateway saw", ["agency", "year"],
            registry=registry,
        )

    def show(self, reports: list[IndexReport], year: int) -> None:
        for gauge in (self.share, self.points, self.dossiers):
            gauge.clear()  # an agency or year no longer reported must not linger at its old value
        for report in reports:
            agency = report.agency or ALL
            self.dossiers.labels(agency, str(year)).set(report.dossiers)
            for figure in report.figures:
                if figure.share is not None:
                    self.share.labels(figure.key, agency, str(year)).set(figure.share)
                if figure.points is not None:
                    self.points.labels(figure.key, agency, str(year)).set(figure.points)


def year_reports(rows: list[IndexRow], year: int) -> list[IndexReport]:
    """The whole province's figures for `year`, then each agency's."""
    start = datetime(year, 1, 1, tzinfo=VIETNAM)
    end = datetime(year + 1, 1, 1, tzinfo=VIETNAM)
    by_agency: dict[str, list[IndexRow]] = defaultdict(list)
    for row in rows:
        by_agency[row.agency_code].append(row)
    return [compute(rows, start, end), *(compute(by_agency[a], start, end, agency=a) for a in sorted(by_agency))]


async def sample(store: ServiceIndexStore, gauges: IndexGauges) -> None:
    """Recompute the gauges from the store."""
    latest = await store.latest_received()
    if latest is None:
        return
    year = latest.astimezone(VIETNAM).year
    rows = await store.rows(datetime(year, 1, 1, tzinfo=VIETNAM), datetime(year + 1, 1, 1, tzinfo=VIETNAM))
    gauges.show(year_reports(rows, year), year)
