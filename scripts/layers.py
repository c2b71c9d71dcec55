"""Print dlstream's layers as they are: lines of code per subpackage, and which subpackage imports which
(with the number of importing modules), from the import graph that ``import-linter`` checks.

    PYTHONPATH=services:pipelines .venv/bin/python scripts/layers.py     (or: make layers)
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = ("services", "pipelines")
# Subpackages shown one level deeper than the rest: they hold several layers' worth of code.
SPLIT = ("dlstream.adapters", "dlstream.tools")


def subpackage(module: str) -> str:
    """The subpackage a module belongs to, as the layers name it."""
    parts = module.split(".")
    depth = 3 if ".".join(parts[:2]) in SPLIT else 2
    return ".".join(parts[:depth])


def line_counts() -> dict[str, tuple[int, int]]:
    """Per subpackage: its modules and lines of Python."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for root in SOURCE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT / root).with_suffix("").parts).removesuffix(".__init__")
            entry = counts[subpackage(module)]
            entry[0] += 1
            entry[1] += len(path.read_text().splitlines())
    return {name: (files, lines) for name, (files, lines) in sorted(counts.items())}


def imports_between() -> dict[str, Counter[str]]:
    """Per subpackage: the subpackages it imports, and how many of its modules import each."""
    graph = grimp.build_graph("dlstream")
    edges: dict[str, Counter[str]] = defaultdict(Counter)
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            source, target = subpackage(importer), subpackage(imported)
            if source != target and target.startswith("dlstream."):
                edges[source][target] += 1
    return edges


def main() -> None:
    """Print both tables."""
    counts = line_counts()
    out = sys.stdout
    out.write(f"{'subpackage':<28} {'modules':>7} {'lines':>6}\n")
    for name, (files, lines) in counts.items():
        out.write(f"{name:<28} {files:>7} {lines:>6}\n")
    total = sum(lines for _, lines in counts.values())
    out.write(
        f"{'total':<28} {sum(f for f, _ in counts.values()):>7} {total:>6}\n\nimports between subpackages:\n"
    )
    for source, targets in sorted(imports_between().items()):
        listed = ", ".join(
            f"{target.removeprefix('dlstream.')} ({n})" for target, n in sorted(targets.items())
        )
        out.write(f"  {source.removeprefix('dlstream.'):<18} -> {listed}\n")


if __name__ == "__main__":
    main()
