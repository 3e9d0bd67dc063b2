"""tests/durations.py reads pytest's durations list: only `call` lines, the longest of repeats, ids with spaces."""

from __future__ import annotations

from tests.durations import parse


def test_only_call_lines_are_read_and_a_repeated_id_keeps_its_longest_time() -> None:
    lines = [
        "============================= slowest 15 durations =============================",
        "67.28s call     tests/unit/test_a.py::test_one",
        "12.00s setup    tests/unit/test_a.py::test_two",
        "3.50s call     tests/unit/test_b.py::test_three[a b]",
        "4.00s call tests/unit/test_a.py::test_one",
        "(2 durations < 0.005s hidden.  Use -vv to show these durations.)",
    ]
    assert parse(lines) == {"tests/unit/test_a.py::test_one": 67.28, "tests/unit/test_b.py::test_three[a b]": 3.5}
