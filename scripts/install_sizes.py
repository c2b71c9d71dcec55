"""Measure the installed size of dlstream's install sets: each one in a fresh virtual environment, installed
the way the images install it (``pip install --no-compile``), then its ``site-packages`` summed on disk.

    .venv/bin/python scripts/install_sizes.py [--set base --set models ...] [--json]

Sets: ``base`` (``pip install .``: client, worker, monitor), ``models`` (``.[models]``: building, training and
serving the models), ``stack`` (``.[stack]``: plus the local Triton). pip's cache makes repeated runs quick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = {"base": "", "models": "[models]", "stack": "[stack]"}


def tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def measure(name: str, extra: str) -> dict[str, object]:
    """Install one set into a fresh venv and report its size, the largest top-level entries and whether
    torch came with it."""
    with tempfile.TemporaryDirectory(prefix=f"dlstream-{name}-") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        started = time.monotonic()
        subprocess.run([*pip, "install", "--quiet", "--no-compile", f"{ROOT}{extra}"], check=True)
        seconds = time.monotonic() - started
        frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True).stdout
        (site,) = venv.glob("lib/python*/site-packages")
        entries = {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
        largest = sorted(entries.items(), key=lambda item: -item[1])[:8]
        return {
            "set": name,
            "requirement": f".{extra}",
            "site_packages_mb": round(sum(entries.values()) / 1e6, 1),
            "venv_mb": round(tree_bytes(venv) / 1e6, 1),
            "packages": len([line for line in frozen.splitlines() if line and not line.startswith("#")]),
            "has_torch": any(line.lower().startswith("torch==") for line in frozen.splitlines()),
            "largest_mb": {entry: round(size / 1e6, 1) for entry, size in largest},
            "install_seconds": round(seconds, 1),
        }


def main() -> None:
    """Measure the chosen sets and print them (a table, or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sets", action="append", choices=sorted(SETS), help="repeatable")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    results = [measure(name, SETS[name]) for name in args.sets or ["base", "models"]]
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for r in results:
        sys.stdout.write(
            f"{r['set']:<7} {r['site_packages_mb']:>8} MB site-packages  {r['venv_mb']:>8} MB venv  "
            f"{r['packages']} packages  torch={r['has_torch']}  largest: {r['largest_mb']}\n"
        )


if __name__ == "__main__":
    main()
