"""Measure the installed size of dlstream's install sets: a wheel is built from the repository, and each set
is installed from it into a fresh virtual environment the way the images install it (``pip install
--no-compile``), then its ``site-packages`` summed on disk.

    .venv/bin/python scripts/install_sizes.py [--set client --set worker ...] [--json]

Sets, one per role: ``client`` (``pip install dlstream``: the client SDK and the publish, subscribe, label and
dlq commands), ``worker`` (``[worker]``: an inference worker), ``monitor`` (``[monitor]``: the drift monitor,
its Kubernetes launcher and report), ``models`` (``[models]``: building, training, retraining and serving the
models, with torch), ``stack`` (``[stack]``: the local stack with its Triton). Each line also says which
top-level import names the set adds beside the standard library's. pip's cache makes repeated runs quick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = {"client": "", "worker": "[worker]", "monitor": "[monitor]", "models": "[models]", "stack": "[stack]"}
DEFAULT_SETS = ("client", "worker", "monitor", "models")


def tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def build_wheel(folder: Path) -> Path:
    """The project's wheel, built into ``folder``."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder), str(ROOT)]
    subprocess.run(command, check=True)
    (wheel,) = folder.glob("dlstream-*.whl")
    return wheel


def wheel_top_level(wheel: Path) -> list[str]:
    """The top-level names the wheel installs, but for its metadata folder."""
    with zipfile.ZipFile(wheel) as archive:
        names = {name.split("/")[0] for name in archive.namelist()}
    return sorted(name for name in names if not name.endswith((".dist-info", ".data")))


def install_set(venv: Path, extra: str, wheel: Path, *, timeout_s: float | None = None) -> list[str]:
    """Create the venv ``venv`` and install the set ``extra`` ("" for the client) from ``wheel`` into it, as
    the images install it; its pip command."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout_s)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    requirement = f"dlstream{extra} @ {wheel.as_uri()}"
    subprocess.run([*pip, "install", "--quiet", "--no-compile", requirement], check=True, timeout=timeout_s)
    return pip


def measure(name: str, extra: str, wheel: Path) -> dict[str, object]:
    """Install one set into a fresh venv and report its size, the largest top-level entries and whether
    torch, the Kubernetes client or matplotlib came with it."""
    with tempfile.TemporaryDirectory(prefix=f"dlstream-{name}-") as folder:
        venv = Path(folder) / "venv"
        started = time.monotonic()
        pip = install_set(venv, extra, wheel)
        seconds = time.monotonic() - started
        frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True).stdout
        installed = {line.split("==")[0].lower() for line in frozen.splitlines() if "==" in line}
        (site,) = venv.glob("lib/python*/site-packages")
        entries = {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
        largest = sorted(entries.items(), key=lambda item: -item[1])[:8]
        return {
            "set": name,
            "requirement": f".{extra}",
            "site_packages_mb": round(sum(entries.values()) / 1e6, 1),
            "venv_mb": round(tree_bytes(venv) / 1e6, 1),
            "packages": len([line for line in frozen.splitlines() if line and not line.startswith("#")]),
            "has_torch": "torch" in installed,
            "has_kubernetes": "kubernetes" in installed,
            "has_matplotlib": "matplotlib" in installed,
            "largest_mb": {entry: round(size / 1e6, 1) for entry, size in largest},
            "install_seconds": round(seconds, 1),
        }


def main() -> None:
    """Measure the chosen sets and print them (a table, or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sets", action="append", choices=sorted(SETS), help="repeatable")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlstream-wheel-") as folder:
        wheel = build_wheel(Path(folder))
        top_level = wheel_top_level(wheel)
        results = [measure(name, SETS[name], wheel) for name in args.sets or DEFAULT_SETS]
    if args.json:
        sys.stdout.write(json.dumps({"wheel_top_level": top_level, "sets": results}) + "\n")
        return
    sys.stdout.write(f"the wheel installs the top-level names: {', '.join(top_level)}\n")
    for r in results:
        sys.stdout.write(
            f"{r['set']:<8} {r['site_packages_mb']:>8} MB site-packages  {r['venv_mb']:>8} MB venv  "
            f"{r['packages']:>3} packages  torch={r['has_torch']} kubernetes={r['has_kubernetes']} "
            f"matplotlib={r['has_matplotlib']}  largest: {r['largest_mb']}\n"
        )


if __name__ == "__main__":
    main()
