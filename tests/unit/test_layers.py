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


# The floors of docs/architecture.md, lowest first; a package may import its own floor and
# those below it, never one above (the firmware bridge and the drivers share a floor's
# height, but the bridge flashes over the drivers' BLE link, so it stands on them).
FLOORS = ("floor", "drivers", "firmware_bridge", "edge", "tools")


def _upward(package: str) -> dict[str, list[str]]:
    above = FLOORS[FLOORS.index(package) + 1 :]
    found = {}
    for f, names in modules(package).items():
        bad = sorted(n for top in above for n in ours(names, top))
        if bad:
            found[f] = bad
    return found


def test_no_package_imports_a_floor_above_it() -> None:
    bad = {package: _upward(package) for package in FLOORS}
    assert not {p: f for p, f in bad.items() if f}


def test_the_top_level_packages_form_no_cycle() -> None:
    edges = {
        (package, top)
        for package in FLOORS
        for names in modules(package).values()
        for top in FLOORS
        if top != package and ours(names, top)
    }
    assert all(FLOORS.index(a) > FLOORS.index(b) for a, b in edges), sorted(edges)


def test_only_the_cli_wires_the_app() -> None:
    users = sorted(f for folder in FLOORS for f, names in modules(folder).items() if ours(names, "edge.app"))
    assert users == ["tools/cli.py"]


def test_parsers_do_no_io() -> None:
    parsers = [
        *REPO.glob("drivers/*/parse.py"),
        REPO / "drivers/nmea0183.py",
        REPO / "drivers/ble/profiles.py",
    ]
    io = {"asyncio", "socket", "serial", "sqlite3", "subprocess", "os", "logging", "time"}
    bad = {str(p.relative_to(REPO)): sorted(imports(p) & io) for p in parsers}
    assert not {f: n for f, n in bad.items() if n}


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """Positive control: an import from the gateway into a driver is found."""
    sample = REPO / "drivers" / "base.py"
    assert "floor.clock" in imports(sample)
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nif True:\n    from edge.outbox import Outbox\n", encoding="utf-8")
    assert ours(imports(bad), "edge") == {"edge.outbox", "edge.outbox.Outbox"}


MAX_CLASS_LINES = 300


def test_no_class_is_past_the_size_one_reader_holds() -> None:
    """A class past this is doing more than one thing; ruff's rules hold the functions."""
    sizes = {
        f"{path.relative_to(REPO)}:{node.name}": node.end_lineno - node.lineno + 1
        for package in FLOORS
        for path in (REPO / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert len(sizes) > 50
    assert not {name: n for name, n in sizes.items() if n > MAX_CLASS_LINES}
