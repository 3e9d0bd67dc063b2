"""The layering rules hold: adapters never import each other, clients never import Kafka, handlers never
import aiohttp or zeep, contracts import nothing of ours, and nothing in the library imports the tests.

A rule is checked on everything a module pulls in, not only on its own import lines: relative imports
are resolved to absolute names, `from pkg import name` counts as importing `pkg.name` when that is a
module of ours, importing `a.b.c` also runs `a` and `a.b` (their `__init__` modules), and the project's
own modules are followed transitively. Third-party packages are leaves. Every import statement counts,
including those under `if TYPE_CHECKING:` and inside functions: a layer that needs another one's types
depends on it too, and a function-level import still runs.

The checker itself is tested on small synthetic module trees (bottom of this file), so that a rule that
found nothing in the real tree is known to be able to find something.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "adapters", "contracts", "tests", "bench")
LIBRARY = ("gateway", "adapters", "contracts")
KAFKA = ("aiokafka", "faststream", "confluent_kafka", "gateway.runtime")
HTTP = ("aiohttp", "zeep", "httpx", "requests")


class ModuleGraph:
    """The project's modules under `root` and what each one imports, with names made absolute."""

    def __init__(self, root: Path, packages: Iterable[str] = PACKAGES) -> None:
        self.modules: dict[str, Path] = {}
        for package in packages:
            for path in sorted((root / package).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                self.modules[".".join(parts)] = path
        self._direct: dict[str, set[str]] = {}

    def resolve(self, module: str, level: int, target: str | None) -> str:
        """The absolute name of `from <level dots><target> import ...` written in `module`."""
        if level == 0:
            assert target is not None
            return target
        is_package = self.modules[module].name == "__init__.py"
        package = module.split(".") if is_package else module.split(".")[:-1]
        if level - 1 >= len(package):
            raise ImportError(f"{module}: relative import beyond the top-level package")
        base = package[: len(package) - (level - 1)]
        return ".".join([*base, target] if target else base)

    def direct(self, module: str) -> set[str]:
        """Absolute names `module` imports itself."""
        if module not in self._direct:
            found: set[str] = set()
            tree = ast.parse(self.modules[module].read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = self.resolve(module, node.level, node.module)
                    found.add(base)
                    # `from gateway import runtime` imports the module gateway.runtime, not a name in gateway.
                    found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.modules)
            self._direct[module] = found
        return self._direct[module]

    def reach(self, start: str) -> dict[str, str | None]:
        """Every name importing `start` pulls in, each mapped to the module that imported it first."""
        via: dict[str, str | None] = {}
        queue: deque[str] = deque()

        def visit(name: str, importer: str | None) -> None:
            # Importing a.b.c executes a/__init__ and a/b/__init__ first.
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix not in via:
                    via[prefix] = importer
                    if prefix in self.modules:
                        queue.append(prefix)

        visit(start, None)
        while queue:
            module = queue.popleft()
            for name in sorted(self.direct(module)):
                visit(name, module)
        return via

    def violations(self, sources: Iterable[str], forbidden: Iterable[str]) -> list[str]:
        """One line per forbidden name a source reaches, with the import chain that gets there."""
        prefixes = tuple(forbidden)
        found: list[str] = []
        for source in sources:
            via = self.reach(source)
            for name in sorted(via):
                if any(name == p or name.startswith(p + ".") for p in prefixes):
                    chain = [name]
                    while (importer := via[chain[-1]]) is not None:
                        chain.append(importer)
                    found.append(" -> ".join(reversed(chain)))
        return found

    def under(self, package: str) -> list[str]:
        return sorted(m for m in self.modules if m == package or m.startswith(package + "."))


def adapter_packages(graph: ModuleGraph) -> list[str]:
    return sorted({m.split(".")[1] for m in graph.under("adapters") if m.count(".") >= 1})


def cross_adapter_imports(graph: ModuleGraph, adapter: str) -> list[str]:
    others = [f"adapters.{a}" for a in adapter_packages(graph) if a != adapter]
    return graph.violations(graph.under(f"adapters.{adapter}"), others)


GRAPH = ModuleGraph(ROOT)
ADAPTERS = adapter_packages(GRAPH)
CLIENTS = [m for m in GRAPH.under("adapters") if m.endswith(".client")]
HANDLERS = [m for m in GRAPH.under("adapters") if m.endswith(".handlers")]


def test_the_real_tree_is_seen() -> None:
    # Guards the parametrisations below against silently running over nothing.
    assert "national_portal" in ADAPTERS and len(ADAPTERS) >= 2
    assert "adapters.national_portal.client" in CLIENTS
    assert "adapters.national_portal.handlers" in HANDLERS


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_never_import_each_other(adapter: str) -> None:
    assert cross_adapter_imports(GRAPH, adapter) == []


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_never_reach_kafka(client: str) -> None:
    assert GRAPH.violations([client], KAFKA) == []


@pytest.mark.parametrize("handlers", HANDLERS)
def test_handlers_never_reach_http_or_soap_libraries(handlers: str) -> None:
    assert GRAPH.violations([handlers], HTTP) == []


def test_contracts_stand_alone() -> None:
    assert GRAPH.violations(GRAPH.under("contracts"), ("gateway", "adapters", "tests", "bench")) == []


def test_library_never_reaches_tests_or_benchmarks() -> None:
    library = [m for package in LIBRARY for m in GRAPH.under(package)]
    assert GRAPH.violations(library, ("tests", "bench")) == []


def test_every_implemented_adapter_has_the_same_files() -> None:
    expected = {"__init__.py", "settings.py", "client.py", "mapping.py", "handlers.py", "simulator.py"}
    implemented = [ROOT / "adapters" / a for a in ADAPTERS if (ROOT / "adapters" / a / "handlers.py").exists()]
    assert implemented, "no adapter implemented"
    for adapter in implemented:
        assert expected <= {f.name for f in adapter.iterdir()}, adapter


def test_every_module_opens_with_a_docstring() -> None:
    for package in LIBRARY:
        for module in (ROOT / package).rglob("*.py"):
            if "migrations" in module.parts:
                continue
            tree = ast.parse(module.read_text(encoding="utf-8"))
            assert ast.get_docstring(tree), f"{module} has no module docstring"


# -- the checker on synthetic trees ------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> ModuleGraph:
    """Write `files` (path -> source) under `root`, every package with an __init__.py, and scan it."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for parent in path.relative_to(root).parents:
            if parent != Path(".") and not (root / parent / "__init__.py").exists():
                (root / parent / "__init__.py").write_text("", encoding="utf-8")
    return ModuleGraph(root)


CLEAN = {
    "adapters/alpha/client.py": "import aiohttp\nfrom gateway.errors import Failed\nfrom . import mapping\n",
    "adapters/alpha/mapping.py": "from contracts.events import Event\nfrom .settings import Settings\n",
    "adapters/alpha/settings.py": "import pydantic\n",
    "adapters/alpha/handlers.py": "from ..alpha import mapping\nfrom gateway import adapter\n",
    "adapters/beta/handlers.py": "from adapters.beta.mapping import x\n",
    "adapters/beta/mapping.py": "x = 1\n",
    "gateway/errors.py": "class Failed(Exception): ...\n",
    "gateway/adapter.py": "from contracts.events import Event\n",
    "gateway/runtime/consumer.py": "import aiokafka\n",
    "gateway/bootstrap.py": "from adapters.alpha import handlers\nfrom adapters.beta import handlers as b\n",
    "contracts/events.py": "import pydantic\n",
}


def test_a_clean_tree_has_no_violations(tmp_path: Path) -> None:
    graph = write_tree(tmp_path, CLEAN)
    assert cross_adapter_imports(graph, "alpha") == cross_adapter_imports(graph, "beta") == []
    assert graph.violations(["adapters.alpha.client"], KAFKA) == []
    assert graph.violations(["adapters.alpha.handlers", "adapters.beta.handlers"], HTTP) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import adapters.beta.mapping\n", "adapters.alpha.mapping -> adapters.beta"),
        ("from adapters.beta.mapping import x\n", "adapters.alpha.mapping -> adapters.beta"),
        ("from adapters import beta\n", "adapters.alpha.mapping -> adapters.beta"),
        ("from ..beta import mapping\n", "adapters.alpha.mapping -> adapters.beta"),
        ("from .. import beta\n", "adapters.alpha.mapping -> adapters.beta"),
        # Indirect: through a gateway module, and through the composition root that wires every adapter.
        ("from gateway.helpers import y\n", "adapters.alpha.mapping -> gateway.helpers -> adapters.beta"),
        ("import gateway.bootstrap\n", "adapters.alpha.mapping -> gateway.bootstrap -> adapters.beta"),
        # A package's __init__ runs on any import of one of its modules.
        ("from gateway.store.ledger import z\n", "adapters.alpha.mapping -> gateway.store -> adapters.beta"),
    ],
    ids=["import", "from-module", "from-package", "relative", "relative-package", "indirect", "root", "init"],
)
def test_an_adapter_reaching_another_is_caught(tmp_path: Path, source: str, expected: str) -> None:
    graph = write_tree(
        tmp_path,
        {
            **CLEAN,
            "adapters/alpha/mapping.py": source,
            "gateway/helpers.py": "from adapters.beta.mapping import x\ny = x\n",
            "gateway/store/__init__.py": "from adapters.beta import mapping\n",
            "gateway/store/ledger.py": "z = 0\n",
        },
    )
    assert expected in cross_adapter_imports(graph, "alpha")
    assert cross_adapter_imports(graph, "beta") == []


@pytest.mark.parametrize(
    ("client", "extra", "expected"),
    [
        ("from gateway import runtime\n", {}, "adapters.alpha.client -> gateway.runtime"),
        ("from gateway.runtime import consumer\n", {}, "adapters.alpha.client -> gateway.runtime"),
        ("from .mapping import m\n", {"adapters/alpha/mapping.py": "import faststream\nm = 1\n"}, "-> faststream"),
        ("from gateway.errors import Failed\n", {"gateway/errors.py": "import aiokafka\n"}, "-> aiokafka"),
    ],
    ids=["from-package", "from-subpackage", "relative-indirect", "indirect"],
)
def test_a_client_reaching_kafka_is_caught(tmp_path: Path, client: str, extra: dict[str, str], expected: str) -> None:
    graph = write_tree(tmp_path, {**CLEAN, "adapters/alpha/client.py": client, **extra})
    found = graph.violations(["adapters.alpha.client"], KAFKA)
    assert found and found[0].startswith("adapters.alpha.client ->") and expected in found[0], found


def test_handlers_reaching_http_through_the_client_is_caught(tmp_path: Path) -> None:
    graph = write_tree(tmp_path, {**CLEAN, "adapters/alpha/handlers.py": "from .client import Client\n"})
    assert graph.violations(["adapters.alpha.handlers"], HTTP) == [
        "adapters.alpha.handlers -> adapters.alpha.client -> aiohttp"
    ]


def test_relative_imports_resolve_like_python(tmp_path: Path) -> None:
    graph = write_tree(tmp_path, {"adapters/alpha/client.py": "", "adapters/alpha/sub/__init__.py": ""})
    assert graph.resolve("adapters.alpha.client", 1, None) == "adapters.alpha"
    assert graph.resolve("adapters.alpha.client", 1, "mapping") == "adapters.alpha.mapping"
    assert graph.resolve("adapters.alpha.client", 2, "beta") == "adapters.beta"
    # In a package's __init__, one dot is the package itself.
    assert graph.resolve("adapters.alpha.sub", 1, "x") == "adapters.alpha.sub.x"
    assert graph.resolve("adapters.alpha.sub", 2, None) == "adapters.alpha"
    with pytest.raises(ImportError, match="beyond the top-level"):
        graph.resolve("adapters.alpha.client", 3, None)
