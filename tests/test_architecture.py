"""The package map of docs/ARCHITECTURE.md, enforced: every import in retrain_core and
retrain_tui is read with `ast` (lazy ones inside functions too) and checked against the
layers below. A new package, or an import that runs up a layer, fails here with the file
and line that does it."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from retrain_core.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("retrain_core", "retrain_tui")

# Lowest first. A unit imports units of its own layer or below, never above. A unit is a
# package (`train`), a top-level module (`plan`), `retrain_tui` as a whole, or `commands`:
# cli.py and every module cli.COMMANDS names, wherever it lives (train/cli.py, export.py, ...).
LAYERS: list[tuple[str, ...]] = [
    ("atomic", "error_record", "registry", "expr", "notify", "gpus", "tail", "stats",
     "resources", "throttle", "sepa", "tasks"),                                  # foundations
    ("config", "advantages", "models", "squeeze"),
    ("plan",),
    ("train", "supervisor"),
    ("compare",),
    ("commands",),
    ("retrain_tui",),
]

# Same-layer or below, but still not allowed: (importer, imported).
FORBIDDEN = {
    ("train", "supervisor"): "the trainer knows nothing of campaigns",
    ("supervisor", "train"): "the supervisor starts the trainer as a subprocess, never imports it",
    ("retrain_tui", "commands"): "the TUI calls library functions, not command modules",
    ("retrain_tui", "train"): "the TUI never imports torch",
    ("retrain_tui", "models"): "the TUI never imports torch",
    ("retrain_tui", "advantages"): "the TUI never imports torch",
}

# Arrows known to run up, each with why it is still there. The test fails when one is gone,
# so the list only shrinks.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for package in PRODUCT for p in sorted((REPO / package).rglob("*.py"))}
COMMAND_MODULES = {module for module, _ in COMMANDS.values()} | {"retrain_core.cli"}


def unit(module: str) -> str:
    if module in COMMAND_MODULES:
        return "commands"
    parts = module.split(".")
    if parts[0] == "retrain_tui":
        return "retrain_tui"
    return parts[1] if len(parts) > 1 else "retrain_core"


def imports(path: Path, module: str):
    """(imported module, line) for every import statement of the file, lazy ones included."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from retrain_core import gpus` imports the module retrain_core.gpus
                yield (f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base,
                       node.lineno)


def arrows():
    """(importer unit, imported unit, "file:line", imported module) across unit borders."""
    for module, path in SOURCES.items():
        for target, line in sorted(set(imports(path, module))):  # one per name imported
            if target.split(".")[0] in PRODUCT and unit(target) != unit(module):
                yield unit(module), unit(target), f"{path.relative_to(REPO)}:{line}", target


LAYER_OF = {name: index for index, layer in enumerate(LAYERS) for name in layer}


def test_every_package_has_a_layer() -> None:
    missing = sorted({unit(m) for m in SOURCES} - set(LAYER_OF) - {"retrain_core"})
    assert not missing, (f"{missing}: new package(s); put each in LAYERS (tests/test_architecture.py) "
                         "and in the package map of docs/ARCHITECTURE.md")


def test_no_import_runs_up_a_layer() -> None:
    bad = []
    for source, target, where, module in arrows():
        if (where.split(":")[0], module) in KNOWN_UPWARD:
            continue
        if LAYER_OF.get(target, 0) > LAYER_OF.get(source, 0):
            bad.append(f"{where}: {source} (layer {LAYER_OF[source]}) imports {module} "
                       f"({target}, layer {LAYER_OF[target]})")
        elif (source, target) in FORBIDDEN:
            bad.append(f"{where}: {source} imports {module}: {FORBIDDEN[(source, target)]}")
    assert not bad, "imports against docs/ARCHITECTURE.md's package map:\n" + "\n".join(bad)


def test_known_upward_arrows_still_exist() -> None:
    present = {(where.split(":")[0], module) for _, _, where, module in arrows()}
    gone = sorted(set(KNOWN_UPWARD) - present)
    assert not gone, f"{gone}: fixed, so remove from KNOWN_UPWARD and the docs' map"


def test_units_import_each_other_in_one_direction_only() -> None:
    graph = defaultdict(set)
    for source, target, where, module in arrows():
        if (where.split(":")[0], module) not in KNOWN_UPWARD:
            graph[source].add(target)
    loops = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))
    assert not loops, f"packages importing each other: {loops}"


def test_the_product_never_imports_tests_benches_or_tools() -> None:
    bad = [f"{SOURCES[m].relative_to(REPO)}:{line}: {target}"
           for m in SOURCES for target, line in imports(SOURCES[m], m)
           if target.split(".")[0] in ("tests", "bench", "tools", "conftest")]
    assert not bad, bad


def test_core_never_imports_textual() -> None:
    bad = [f"{SOURCES[m].relative_to(REPO)}:{line}: {target}"
           for m in SOURCES if m.startswith("retrain_core")
           for target, line in imports(SOURCES[m], m) if target.split(".")[0] == "textual"]
    assert not bad, bad


def listed(text: str) -> set[str]:
    return {name.strip() for name in text.split("#")[0].split(",") if name.strip()}


def documented_map() -> tuple[list[set[str]], dict[str, set[str]]]:
    """The map's code block in docs/ARCHITECTURE.md: `layer N: a, b` lines (any order) and
    `importer -> imported, ...` lines (a `#` starts a comment)."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    layers, graph = {}, {}
    for line in section.splitlines():
        if match := re.fullmatch(r"layer (\d+): (.+)", line):
            layers[int(match.group(1))] = listed(match.group(2))
        elif match := re.fullmatch(r"(\w+) +-> (.+)", line):
            graph[match.group(1)] = listed(match.group(2))
    return [layers.get(i, set()) for i in range(max(layers, default=-1) + 1)], graph


def test_the_docs_map_shows_these_layers() -> None:
    layers, _ = documented_map()
    assert layers == [set(layer) for layer in LAYERS], "docs/ARCHITECTURE.md's layers differ from LAYERS"


def test_the_docs_map_lists_every_import_between_packages() -> None:
    actual = defaultdict(set)
    for source, target, _, _ in arrows():
        actual[source].add(target)
    _, documented = documented_map()
    missing = sorted(f"{s} -> {t}" for s in actual for t in actual[s] - documented.get(s, set()))
    stale = sorted(f"{s} -> {t}" for s in documented for t in documented[s] - actual.get(s, set()))
    assert not missing, f"imports missing from the map in docs/ARCHITECTURE.md: {missing}"
    assert not stale, f"arrows in docs/ARCHITECTURE.md's map that no import makes: {stale}"
