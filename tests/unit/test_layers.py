"""The layers of docs/architecture.md's map, held by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _runtime(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (an annotation is no dependency)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                todo.extend(child.orelse)
            else:
                todo.append(child)
    return out


def imports(path: Path) -> set[str]:
    """Every module a file imports when it runs (at any depth)."""
    found: set[str] = set()
    for node in _runtime(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def modules(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): imports(p) for p in sorted((REPO / folder).rglob("*.py"))}


def ours(names: set[str], top: str) -> set[str]:
    return {n for n in names if n == top or n.startswith(top + ".")}


def test_drivers_and_the_firmware_bridge_stand_only_on_the_base() -> None:
    bad = {
        f: sorted(n for n in ours(names, "edge") if not n.startswith("edge.base"))
        for folder in ("drivers", "firmware_bridge")
        for f, names in modules(folder).items()
    }
    assert not {f: n for f, n in bad.items() if n}


def test_the_base_imports_nothing_above_it() -> None:
    # the config reads the wearable kinds' names and which need an event key (drivers/ble/kinds)
    allowed = {"drivers.ble.kinds", "drivers.ble.kinds.NAMES", "drivers.ble.kinds.KEYED"}
    bad = {}
    for f, names in modules("edge/base").items():
        above = {n for n in ours(names, "edge") if not n.startswith("edge.base")}
        above |= (ours(names, "drivers") | ours(names, "firmware_bridge")) - allowed
        if above:
            bad[f] = sorted(above)
    assert not bad


def test_only_the_cli_wires_the_app() -> None:
    users = sorted(
        f
        for folder in ("edge", "drivers", "firmware_bridge")
        for f, names in modules(folder).items()
        if ours(names, "edge.app")
    )
    assert users == ["edge/cli.py"]


def test_parsers_do_no_io() -> None:
    parsers = [
        *REPO.glob("drivers/*/parse.py"),
        REPO / "drivers/nmea0183.py",
        REPO / "drivers/ble/profiles.py",
    ]
    io = {"asyncio", "socket", "serial", "sqlite3", "subprocess", "os", "logging", "time"}
    bad = {str(p.relative_to(REPO)): sorted(imports(p) & io) for p in parsers}
    assert not {f: n for f, n in bad.items() if n}


def test_the_rule_sees_a_violation() -> None:
    """Positive control: an import from the core into a driver is found."""
    sample = REPO / "drivers" / "base.py"
    assert "edge.base.clock" in imports(sample)
    assert ours({"edge.outbox", "edge.base.clock"}, "edge") - {"edge.base.clock"} == {"edge.outbox"}
