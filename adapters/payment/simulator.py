"""A payment platform simulator: create transactions, a "pay" endpoint for the citizen, signed callbacks with
knobs (delay, duplicates, loss, reordering), inquiry, and the daily statement (CSV).

    POST /api/v1/transactions            create (check_sum key 1); idempotent per transaction_id
    POST /api/v1/transactions/inquiry    the transaction's state, signed with key 2
    POST /pay/{transaction_id}           {"outcome": "paid" | "failed"}: the citizen pays (or the bank refuses)
    GET  /api/v1/statements/{yyyy-mm-dd} the day's paid transactions, CSV
    GET/POST /_sim/knobs, GET /_sim/stats

Callbacks go to `callback_url` (knob), signed with key 2, and are sent again (up to callback_retries) while the
gateway does not answer 200 with return_code 0, unless the knob `callback_loss` drops them (never sent at all).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adapters.payment import mapping
from gateway.simulation import (
    Simulator,
    argument_parser,
    knob_arguments,
    knob_bool,
    knob_number,
    knob_strings,
    run,
)

VN = timezone(timedelta(hours=7))
CREATE_PATH = "/api/v1/transactions"
MAX_RETRY_WAIT_S = 2.0  # a callback is sent again at most this long after the previous try
INQUIRY_PATH = "/api/v1/transactions/inquiry"


@dataclass
class Transaction:
    transaction_id: str
    amount: int
    dossier_code: str
    status: str = mapping.PENDING  # 1 pending, 0 paid, 2 failed
    transaction_code: str = ""
    paid_at: datetime | None = None
    callbacks_acked: int = 0
    callbacks: list[int] = field(default_factory=list)  # HTTP statuses the gateway answered

    def fields(self, key_2: str) -> dict[str, Any]:
        body: dict[str, Any] = {"transaction_id": self.transaction_id, "transaction_code": self.transaction_code,
                                "trans_amount": self.amount, "payment_fee": 0, "status": self.status}
        if self.status == mapping.PAID and self.paid_at is not None:
            number = f"BL-{self.transaction_code}"
            body.update(URLBIENLAI=f"https://bienlai.example.vn/{number}.pdf", SOBIENLAI=number,
                        NGAYBIENLAI=self.paid_at.astimezone(VN).strftime("%d/%m/%Y"))
        body["check_sum"] = mapping.check_sum(key_2, body, mapping.CALLBACK_SIGNED)
        return body


class PaymentSimulator(Simulator):
    """The national payment platform, as far as the gateway sees it."""

    knob_names: ClassVar[tuple[str, ...]] = (
        "callback_url", "callback_delay_s", "callback_duplicates", "callback_loss", "callback_reorder",
        "callback_retries", "callback_retry_s", "fail_creates", "outage", "reject_dossiers", "lose_dossiers",
    )

    def __init__(self, *, client_id: str, key_1: str, key_2: str, seed: int | None = None,
                 **knobs: Any) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(CREATE_PATH, self._create)
        app.router.add_post(INQUIRY_PATH, self._inquiry)
        app.router.add_post("/pay/{txn}", self._pay)
        app.router.add_get("/api/v1/statements/{day}", self._statement)
        super().__init__(app)
        self.client_id, self.key_1, self.key_2 = client_id, key_1, key_2
        self.random = random.Random(seed)
        self.transactions: dict[str, Transaction] = {}
        self.callback_url = ""
        self.callback_delay_s = 0.0
        self.callback_duplicates = 0
        self.callback_loss = 0.0
        self.callback_reorder = False
        self.callback_retries = 5
        self.callback_retry_s = 0.2
        self.fail_creates = 0  # the next n creates answer 503
        self.outage = False  # every create and inquiry answers 503
        self.reject_dossiers: set[str] = set()  # creates for these dossiers are refused (error 07)
        self.lose_dossiers: set[str] = set()  # callbacks for these dossiers are never sent (lost)
        self.counts: dict[str, int] = {k: 0 for k in ("created", "create_repeats", "bad_check_sum", "paid", "failed",
                                                      "callbacks_sent", "callbacks_lost", "callbacks_acked",
                                                      "callbacks_refused", "inquiries")}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.set_knobs(**knobs)

    @staticmethod
    def _coerce_knob(name: str, value: Any) -> Any:
        if name == "callback_url":
            return str(value)
        if name in ("callback_reorder", "outage"):
            return knob_bool(name, value)
        if name in ("reject_dossiers", "lose_dossiers"):
            return set(knob_strings(name, value))
        if name in ("callback_duplicates", "callback_retries", "fail_creates"):
            return int(knob_number(name, value, whole=True))
        return knob_number(name, value, fraction=name == "callback_loss")

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        await super().stop()

    # ----- the platform's API ---------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if self.outage:
            return self._json({"error": "99", "message": "unavailable"}, status=503)
        if self.fail_creates > 0:
            self.fail_creates -= 1
            return self._json({"error": "99", "message": "unavailable"}, status=503)
        try:
            body = mapping.decode_json_object(await request.read())
        except mapping.Unreadable:
            return self._json({"error": "02", "message": "malformed"}, status=400)
        if body.get("client_id") != self.client_id or not mapping.verify(self.key_1, body, mapping.CREATE_SIGNED):
            self.counts["bad_check_sum"] += 1
            return self._json({"error": "01", "message": "invalid check_sum"})
        txn, amount = str(body.get("transaction_id", "")), body.get("trans_amount")
        if not 0 < len(txn) <= 20 or not isinstance(amount, int) or amount <= 0:
            return self._json({"error": "03", "message": "invalid transaction"})
        dossier = str(body.get("bill_info", {}).get("MaHoSo", ""))
        if dossier in self.reject_dossiers:
            return self._json({"error": "07", "message": "the collecting agency refuses this bill"})
        known = self.transactions.get(txn)
        if known is not None:
            if known.amount != amount:
                return self._json({"error": "04", "message": "transaction_id used with another amount"})
            self.counts["create_repeats"] += 1
        else:
            self.transactions[txn] = Transaction(txn, amount, dossier)
            self.counts["created"] += 1
        return self._json({"error": "0", "payment_url": f"{self.base_url}/pay/{txn}"})

    async def _inquiry(self, request: web.Request) -> web.Response:
        self.counts["inquiries"] += 1
        if self.outage:
            return self._json({"error": "99", "message": "unavailable"}, status=503)
        try:
            body = mapping.decode_json_object(await request.read())
        except mapping.Unreadable:
            return self._json({"error": "02", "message": "malformed"}, status=400)
        if not mapping.verify(self.key_1, body, mapping.INQUIRY_SIGNED):
            return self._json({"error": "01", "message": "invalid check_sum"})
        known = self.transactions.get(str(body.get("transaction_id")))
        if known is None:
            return self._json({"error": "05", "message": "unknown transaction"})
        return self._json({"error": "0", **known.fields(self.key_2)})

    async def _pay(self, request: web.Request) -> web.Response:
        known = self.transactions.get(request.match_info["txn"])
        if known is None:
            return self._json({"error": "05"}, status=404)
        outcome = "paid"
        if request.can_read_body:
            try:
                asked = mapping.decode_json_object(await request.read())
            except mapping.Unreadable:
                return self._json({"error": "02", "message": "malformed"}, status=400)
            outcome = str(asked.get("outcome", "paid"))
        self.pay(known.transaction_id, paid=outcome == "paid")
        return self._json({"error": "0", "status": known.status})

    def pay(self, txn: str, *, paid: bool = True, at: datetime | None = None) -> Transaction:
        """The citizen pays (or the bank refuses); the callbacks follow as the knobs say. Paying twice does nothing."""
        known = self.transactions[txn]
        if known.status != mapping.PENDING:
            return known
        known.status = mapping.PAID if paid else "2"
        known.transaction_code = f"NP{len(self.transactions):06d}{txn[:6]}"
        known.paid_at = at or datetime.now(UTC)
        self.counts["paid" if paid else "failed"] += 1
        if known.dossier_code in self.lose_dossiers or self.random.random() < self.callback_loss:
            self.counts["callbacks_lost"] += 1
            return known
        for copy in range(1 + self.callback_duplicates):
            delay = self.callback_delay_s + (self.random.uniform(0, 0.5) if self.callback_reorder else 0.0)
            task = asyncio.get_running_loop().create_task(self._callback(known, delay, copy))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return known

    async def _callback(self, known: Transaction, delay_s: float, copy: int) -> None:
        await asyncio.sleep(delay_s)
        if not self.callback_url:
            return
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        body = json.dumps(known.fields(self.key_2)).encode()
        for attempt in range(1 + self.callback_retries):
            self.counts["callbacks_sent"] += 1
            try:
                async with self._http.post(self.callback_url, data=body,
                                           headers={"Content-Type": "application/json"}) as response:
                    status = response.status
                    answer = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                status, answer = 0, {}
            known.callbacks.append(status)
            if status == 200 and isinstance(answer, dict) and answer.get("return_code") == 0:
                known.callbacks_acked += 1
                self.counts["callbacks_acked"] += 1
                return
            if 400 <= status < 500:
                self.counts["callbacks_refused"] += 1
                return
            await asyncio.sleep(min(self.callback_retry_s * (2 ** attempt), MAX_RETRY_WAIT_S))

    # ----- statement ------------------------------------------------------------------------------------

    def statement(self, day: date) -> str:
        """The day's paid transactions (Vietnamese calendar day), CSV with a header."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["transaction_id", "transaction_code", "dossier_code", "amount", "paid_at"])
        for t in sorted(self.transactions.values(), key=lambda t: t.transaction_id):
            if t.status == mapping.PAID and t.paid_at is not None and t.paid_at.astimezone(VN).date() == day:
                writer.writerow([t.transaction_id, t.transaction_code, t.dossier_code, t.amount,
                                 t.paid_at.astimezone(VN).isoformat()])
        return out.getvalue()

    async def _statement(self, request: web.Request) -> web.Response:
        try:
            day = date.fromisoformat(request.match_info["day"])
        except ValueError:
            return self._json({"error": "06", "message": "date must be yyyy-mm-dd"}, status=400)
        return web.Response(text=self.statement(day), content_type="text/csv")


def main() -> None:
    parser = argument_parser(__doc__, PaymentSimulator.knob_names)
    parser.add_argument("--client-id", default="sim-client")
    parser.add_argument("--key-1", default="sim-key-one-0123456789")
    parser.add_argument("--key-2", default="sim-key-two-0123456789")
    args = parser.parse_args()
    run(args, lambda a: PaymentSimulator(client_id=a.client_id, key_1=a.key_1, key_2=a.key_2, seed=a.seed,
                                         **knob_arguments(a, PaymentSimulator.knob_names)))


if __name__ == "__main__":
    main()
