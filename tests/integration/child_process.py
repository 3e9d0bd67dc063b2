"""Child processes for the kill -9 tests: a test module run with `python -m`, its output in a log file of its own."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

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
