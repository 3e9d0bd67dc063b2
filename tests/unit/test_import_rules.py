"""The layering rules hold: adapters never import each other, clients never import Kafka, handlers never
import aiohttp or zeep, contracts import nothing of ours, and nothing in the library imports the tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "adapters"
KAFKA = ("aiokafka", "faststream", "confluent_kafka", "gateway.runtime")
HTTP = ("aiohttp", "zeep", "httpx", "requests")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(names: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def adapter_dirs() -> list[Path]:
    return sorted(p for p in ADAPTERS.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_adapters_never_import_each_other() -> None:
    for adapter in adapter_dirs():
        others = tuple(f"adapters.{p.name}" for p in adapter_dirs() if p != adapter)
        for module in adapter.rglob("*.py"):
            assert not offending(imports(module), others), module


def test_clients_never_import_kafka() -> None:
    for client in ADAPTERS.glob("*/client.py"):
        assert not offending(imports(client), KAFKA), client


def test_handlers_never_import_http_or_soap_libraries() -> None:
    for handlers in ADAPTERS.glob("*/handlers.py"):
        assert not offending(imports(handlers), HTTP), handlers


def test_contracts_stand_alone() -> None:
    for module in (ROOT / "contracts").rglob("*.py"):
        assert not offending(imports(module), ("gateway", "adapters", "tests", "bench")), module


def test_library_never_imports_tests_or_benchmarks() -> None:
    for package in ("gateway", "adapters", "contracts"):
        for module in (ROOT / package).rglob("*.py"):
            assert not offending(imports(module), ("tests", "bench")), module


def test_every_implemented_adapter_has_the_same_files() -> None:
    expected = {"__init__.py", "settings.py", "client.py", "mapping.py", "handlers.py", "simulator.py"}
    implemented = [p for p in adapter_dirs() if (p / "handlers.py").exists()]
    assert implemented, "no adapter implemented"
    for adapter in implemented:
        assert expected <= {f.name for f in adapter.iterdir()}, adapter


def test_every_module_opens_with_a_docstring() -> None:
    for package in ("gateway", "adapters", "contracts"):
        for module in (ROOT / package).rglob("*.py"):
            if "migrations" in module.parts:
                continue
            tree = ast.parse(module.read_text(encoding="utf-8"))
            assert ast.get_docstring(tree), f"{module} has no module docstring"
