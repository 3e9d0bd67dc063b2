"""The suite's slowest tests, slowest first, from a pytest run's `--durations` list (tests/durations.txt).

`make test` hands tests to its workers one at a time in collection order; tests/conftest.py moves the tests
listed here to the front, slowest first, so the long ones start at once on different workers instead of one
of them starting last and keeping the whole run waiting. Refresh the list after tests change a lot:

    .venv/bin/pytest -q -m "not slow" -n 4 --durations=80 | .venv/bin/python -m tests.durations
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LIST = Path(__file__).with_name("durations.txt")
_LINE = re.compile(r"^(?P<seconds>\d+(?:\.\d+)?)s\s+call\s+(?P<nodeid>\S.*?)\s*$")


def parse(lines: list[str]) -> dict[str, float]:
    """Seconds per test id, from the `call` lines of pytest's durations list (or of tests/durations.txt)."""
    found: dict[str, float] = {}
    for line in lines:
        match = _LINE.match(line.strip())
        if match:
            found[match["nodeid"]] = max(found.get(match["nodeid"], 0.0), float(match["seconds"]))
    return found


def recorded() -> dict[str, float]:
    """The committed list; empty if there is none (the order is then pytest's own)."""
    return parse(LIST.read_text(encoding="utf-8").splitlines()) if LIST.exists() else {}


def main() -> None:
    durations = parse(sys.stdin.read().splitlines())
    if not durations:
        sys.exit("no `--durations` lines on standard input: nothing written")
    lines = [f"{seconds:.2f}s call {nodeid}" for nodeid, seconds in sorted(durations.items(), key=lambda x: -x[1])]
    LIST.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} tests written to {LIST}")


if __name__ == "__main__":
    main()
