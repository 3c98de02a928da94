"""The layers of docs/architecture.md hold: who may import whom, and no import cycle inside a layer.

protocols/ knows nothing of the rest; agent/, sim_hw/ and central/ each import protocols/ and themselves only, so
they meet on the wire alone; gridedge.py and gridedge_demo.py sit above all of them. Read from the source (ast),
so a forbidden import is caught even in a branch no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"agent", "protocols", "sim_hw", "central", "gridedge", "gridedge_demo"}
ALLOWED = {
    "protocols": {"protocols"},
    "agent": {"agent", "protocols"},
    "sim_hw": {"sim_hw", "protocols"},
    "central": {"central", "protocols"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """First-party modules ``path`` imports anywhere in it (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            out |= _imports_of_node(node, name, path)
    return {m for m in out if m.split(".")[0] in FIRST_PARTY}


def _sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    offenders = {}
    for path in _sources(layer):
        bad = sorted(m for m in _imports(path) if m.split(".")[0] not in ALLOWED[layer])
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}, f"{layer}/ may import only {sorted(ALLOWED[layer])}"


def test_no_import_cycle_between_modules_at_import_time() -> None:
    """Module-level imports form no cycle (an import inside a function, made to defer a heavy one, is left out)."""
    modules = {_module_name(p): p for layer in ALLOWED for p in _sources(layer)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        deps: set[str] = set()
        for node in tree.body:  # top level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _imports_of_node(node, name, path)
        graph[name] = {d for d in deps if d in modules and d != name}
    seen: dict[str, int] = {}  # 1 on the stack, 2 done
    cycle: list[str] = []

    def visit(n: str, stack: list[str]) -> bool:
        seen[n] = 1
        for d in sorted(graph[n]):
            if seen.get(d) == 1 and not _is_parent_package(d, n):
                cycle.extend([*stack[stack.index(d) :], d])  # the stack ends with n
                return True
            if d not in seen and visit(d, [*stack, d]):
                return True
        seen[n] = 2
        return False

    for n in sorted(graph):
        if n not in seen and visit(n, [n]):
            break
    assert not cycle, " -> ".join(cycle)


def _is_parent_package(a: str, b: str) -> bool:
    # a package's __init__ importing its own submodules (re-exports) while they import the package's siblings
    return b.startswith(a + ".") or a.startswith(b + ".")


def _imports_of_node(node: ast.Import | ast.ImportFrom, name: str, path: Path) -> set[str]:
    """The modules one import statement names (``from pkg import x`` counts pkg and pkg.x: x may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        mod = ".".join([*base, node.module] if node.module else base)
    else:
        mod = node.module or ""
    return {mod, *(f"{mod}.{a.name}" for a in node.names)}


def test_the_dispatcher_imports_no_package_before_it_knows_the_command() -> None:
    """``gridedge`` starts fast and a plain install runs the agent: sim_hw, central and the demo load on demand."""
    tree = ast.parse((ROOT / "gridedge.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            top |= _imports_of_node(node, "gridedge", ROOT / "gridedge.py")
    assert {m for m in top if m.split(".")[0] in FIRST_PARTY} == set()


def _all_imports(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in it, first-party or not (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    return {m for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
            for m in _imports_of_node(node, name, path)}  # fmt: skip


def test_the_pq_offline_tools_sit_apart_from_the_running_agent() -> None:
    """``pq analyze``, ``pq report`` and the plot (agent/pq/offline) are reached from the dispatcher alone, and
    matplotlib (the ``plot`` extra) from the plots alone (PQ's and the forecast backtest's): the running agent, its
    PQ worker and central's services load neither."""
    offline = ROOT / "agent" / "pq" / "offline"
    plots = {offline / "plot.py", ROOT / "central" / "forecast" / "plot.py"}  # the offline tools' PNGs
    reach_offline, reach_matplotlib = [], []
    for path in [*(p for layer in ALLOWED for p in _sources(layer)), ROOT / "gridedge_demo.py"]:
        mods = _all_imports(path)
        if not path.is_relative_to(offline) and any(m.startswith("agent.pq.offline") for m in mods):
            reach_offline.append(str(path.relative_to(ROOT)))
        if path not in plots and any(m.split(".")[0] == "matplotlib" for m in mods):
            reach_matplotlib.append(str(path.relative_to(ROOT)))
    assert (reach_offline, reach_matplotlib) == ([], [])
    assert any(m.startswith("agent.pq.offline") for m in _all_imports(ROOT / "gridedge.py"))


def _definitions(layers: tuple[str, ...] = ("agent", "protocols", "central")) -> list[tuple[str, ast.AST]]:
    """(module path, node) of every class, function and assigned name defined in ``layers``."""
    out = []
    for layer in layers:
        for path in _sources(layer):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.Assign | ast.AnnAssign):
                    out.append((rel, node))
    return out


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


#: The pieces agent, central and the PQ tools share, each with the one module that defines it.
ONE_DEFINITION = {
    "BrokerConfig": "protocols/mqtt/config.py",
    "parse_broker": "protocols/mqtt/config.py",
    "EventSpool": "agent/events.py",
    "max_order_for": "agent/pq/harmonics.py",
    "harmonics_pct": "agent/pq/harmonics.py",
    "MIN_FRAME_SIZES": "protocols/c37118/codec.py",
}


def test_the_shared_pieces_are_defined_once() -> None:
    """One broker section, one event spool, one copy of each PQ helper, one C37.118 frame-size table."""
    where: dict[str, list[str]] = {name: [] for name in ONE_DEFINITION}
    for rel, node in _definitions():
        for name in _names(node):
            if name in where:
                where[name].append(rel)
    assert where == {name: [path] for name, path in ONE_DEFINITION.items()}


def test_only_protocols_mqtt_holds_broker_fields() -> None:
    """A class with TLS or broker credentials is the MQTT layer's: agent and central take the one BrokerConfig.
    The one other is central's NATS tier (``[broker] kind = "nats"``, a cluster the agents never see), whose login
    and TLS files are parsed by the MQTT layer's own checks (protocols/mqtt/config.py: _password, tls_files)."""
    holders = []
    for rel, node in _definitions():
        if isinstance(node, ast.ClassDef):
            fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            if "tls" in fields or {"username", "password"} <= fields or "ca_file" in fields:
                holders.append((rel, node.name))
    allowed = {"protocols/mqtt/config.py", "protocols/mqtt/session.py", "central/source_nats.py"}
    assert holders and {rel for rel, _ in holders} <= allowed, holders
    assert [name for rel, name in holders if rel == "central/source_nats.py"] == ["NatsConfig"]
