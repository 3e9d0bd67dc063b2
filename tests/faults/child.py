"""`gateway run` for the fault suite's child processes, which also notes every fault that fires.

    GATEWAY_FAULTS="settle=raise" GATEWAY_FAULTS_FIRED=/tmp/fired python -m tests.faults.child

It is the `gateway run` command (the same code, settings and signals); the only difference is that each point
that fires is appended to the file GATEWAY_FAULTS_FIRED names *before* the fault raises or kills, so the case
knows from outside that its point was reached, whether the child survived it (raise) or not (crash). And for a
child that does not stop when asked: SIGUSR1 writes every thread's stack, SIGUSR2 every asyncio task's, to
stderr (the case's log), before the harness kills it.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from gateway import faults

FIRED_ENV = "GATEWAY_FAULTS_FIRED"


class _Noted(list[str]):
    """`faults.fired`, which `hit()` appends to just before it raises or kills: each point also goes to a file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path

    def append(self, point: str) -> None:
        with self._path.open("a", encoding="utf-8") as f:
            f.write(point + "\n")
        super().append(point)


def fired(path: Path) -> list[str]:
    """The points a child noted in `path`, in the order they fired."""
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _dump_tasks(_signum: int, _frame: FrameType | None) -> None:
    """Every asyncio task of the running loop, with its stack (a signal handler: it runs in the loop's thread)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no loop running (yet, or any more)
        tasks = set()
    for task in tasks:
        print(f"task {task.get_name()}: {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def main() -> None:
    noted = os.environ.get(FIRED_ENV)
    if noted:
        faults.fired = _Noted(Path(noted))
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGUSR2, _dump_tasks)
    from gateway.cli import app

    app(args=["run"], prog_name="gateway")


if __name__ == "__main__":
    main()
