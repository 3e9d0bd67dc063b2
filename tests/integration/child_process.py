"""Child processes of the tests: a module run with `python -m`, its output in a log file of its own (the kill -9
tests), or a simulator announcing its address on its first line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


async def start_child(
    module: str, tmp_path: Path, name: str, args: list[str], faults: str | None = None
) -> asyncio.subprocess.Process:
    """`python -m module *args`, stdout and stderr in tmp_path/<name>.log; GATEWAY_FAULTS is `faults` or unset."""
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_FAULTS"}
    env["PYTHONPATH"] = str(ROOT)
    if faults:
        env["GATEWAY_FAULTS"] = faults
    log = (tmp_path / f"{name}.log").open("wb")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT, env=env, stdout=log, stderr=log
    )


async def exited(proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> int:
    """The child's exit code; killed, and the test failed, when it takes longer than `timeout_s`."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the child did not finish in time") from None


@asynccontextmanager
async def simulator_process(module: str, *args: str) -> AsyncIterator[dict[str, Any]]:
    """`python -m module --port 0 *args`: the JSON of its first stdout line; after the block, SIGTERM must stop it
    with exit code 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", "0", *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        first: dict[str, Any] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        yield first
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
