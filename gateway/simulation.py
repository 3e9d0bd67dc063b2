"""What every partner simulator shares: its aiohttp server on loopback, knobs over HTTP and its `python -m` main."""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import logging
import math
import signal
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Final, Self

from aiohttp import web

KNOBS_PATH: Final = "/_sim/knobs"
STATS_PATH: Final = "/_sim/stats"


def knob_bool(name: str, value: Any) -> bool:
    """A boolean knob from JSON or a command line ("true", "no", "1"...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be a boolean")
    return text in ("true", "1", "yes")


def knob_strings(name: str, value: Any) -> list[str]:
    """A list-of-strings knob from a JSON list or a comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a list of strings")


def knob_number(name: str, value: Any, *, fraction: bool = False, whole: bool = False) -> float:
    """A number knob >= 0: at most 1 when it is a `fraction` (a rate), rounded up when `whole` (a count)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    if fraction and number > 1:
        raise ValueError(f"{name} is a fraction between 0 and 1")
    return math.ceil(number) if whole else number


class Simulator(abc.ABC):
    """A partner simulator's server: its app on host:port, GET/POST KNOBS_PATH and GET STATS_PATH added to it.

    Knobs are plain attributes named in `knob_names` unless a subclass keeps them elsewhere (it then overrides
    `knobs` and `_set_knob`); `_coerce_knob` turns a loose value (JSON, a command line) into the knob's.
    """

    knob_names: ClassVar[Collection[str]]

    def __init__(self, app: web.Application) -> None:
        app.router.add_get(KNOBS_PATH, self._get_knobs)
        app.router.add_post(KNOBS_PATH, self._post_knobs)
        app.router.add_get(STATS_PATH, self._get_stats)
        self._app = app
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL."""
        # No access log: it costs ~15 % of throughput, and benchmarks and demos share two cores with the gateway.
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
        await site.start()
        self._runner = runner
        self._base_url = f"http://{host}:{runner.addresses[0][1]}"
        logging.getLogger(type(self).__module__).info("%s listening on %s", type(self).__name__, self._base_url)
        return self._base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def first_line(self) -> dict[str, Any]:
        """What `python -m` prints first, as JSON: scripts that start the simulator read its address there."""
        return {"base_url": self.base_url}

    # ----- knobs --------------------------------------------------------------------------------------

    @property
    def knobs(self) -> dict[str, Any]:
        """Every knob's value, sets as sorted lists (so the result is JSON)."""
        values = {name: getattr(self, name) for name in self.knob_names}
        return {name: sorted(v) if isinstance(v, set) else v for name, v in values.items()}

    def set_knobs(self, **values: Any) -> dict[str, Any]:
        """Set knobs by name from loose values; all are checked first, so a bad one changes nothing."""
        for name in values:
            if name not in self.knob_names:
                raise ValueError(f"unknown knob {name!r}; known: {sorted(self.knob_names)}")
        coerced = {name: self._coerce_knob(name, value) for name, value in values.items()}
        for name, value in coerced.items():
            self._set_knob(name, value)
        return self.knobs

    @staticmethod
    @abc.abstractmethod
    def _coerce_knob(name: str, value: Any) -> Any:
        """`value` as knob `name` takes it; ValueError naming the knob when it cannot."""

    def _set_knob(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    @property
    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters of what the simulator was asked and did, as JSON."""

    # ----- HTTP ---------------------------------------------------------------------------------------

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        body = json.dumps(obj, ensure_ascii=False).encode()
        return web.Response(body=body, status=status, headers=headers, content_type="application/json", charset="utf-8")

    async def _get_knobs(self, request: web.Request) -> web.Response:
        return self._json(self.knobs)

    async def _post_knobs(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object of knob values")
            return self._json(self.set_knobs(**body))
        except ValueError as exc:
            return self._json({"error": str(exc)}, status=400)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return self._json(self.stats)


# ----- `python -m adapters.<partner>.simulator` -------------------------------------------------------


def argument_parser(doc: str | None, knob_names: Collection[str]) -> argparse.ArgumentParser:
    """The options every simulator takes: --host, --port, --seed, --log-level, and --<knob-name> per knob."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0] if doc else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-level", default="WARNING")
    for name in knob_names:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help="knob")
    return parser


def knob_arguments(args: argparse.Namespace, knob_names: Collection[str]) -> dict[str, Any]:
    """The knobs given on the command line."""
    return {name: getattr(args, name) for name in knob_names if getattr(args, name) is not None}


def run(args: argparse.Namespace, build: Callable[[argparse.Namespace], Simulator]) -> None:
    """Serve the simulator `build(args)` makes on --host/--port until SIGTERM or SIGINT; logs go to stderr."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(_serve(args, build))


async def _serve(args: argparse.Namespace, build: Callable[[argparse.Namespace], Simulator]) -> None:
    sim = build(args)
    await sim.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The first stdout line is the contract with benchmark scripts and tests that start us as a subprocess.
    sys.stdout.write(json.dumps(sim.first_line()) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.stop()
