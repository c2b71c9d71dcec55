"""A cache of built versions: a model whose build inputs are unchanged is restored, not trained again.

A build is a pure function of its inputs: the plugin's module, the sources of the model SDK and of the
layers below it (``dlstream.models``, ``domain``, ``config``, ``runtime``, ``adapters``), the installed
distributions (torch, the data packages), the interpreter, the seed and what the plugin declares its data
depends on outside Python (``ModelSpec.data_version``). The digest of these names a
cache entry. Modules the build imported from outside those trees and outside the installed distributions
(helpers of a plugin that lives in its own folder) are listed with their own digests in the entry's manifest,
and a restore checks them too, as ccache's manifests do for headers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from dlstream.domain.card import read_card
from dlstream.models.build import BuildResult, build_spec, read_metrics
from dlstream.models.build_key import FORMAT, SOURCE_PACKAGES, build_key, file_digest, package_dir
from dlstream.models.data_cache import TrainingDataCache
from dlstream.models.export import rename_into_place
from dlstream.models.spec import ModelSpec
from dlstream.models.triton_config import write_configs

KEPT_PER_MODEL = 3
MANIFEST = "manifest.json"
log = structlog.get_logger("dlstream.models")


def _library_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(Path(paths[n]).resolve() for n in names if n in paths)


def _module_files(names: Iterable[str]) -> set[Path]:
    files = set()
    for name in names:
        origin = getattr(sys.modules.get(name), "__file__", None)
        if origin and origin.endswith(".py"):
            files.add(Path(origin).resolve())
    return files


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@dataclass(frozen=True)
class BuildCache:
    """Built versions under ``root/<model>/<digest>/`` (the version's files and a manifest)."""

    root: Path

    def key(self, spec: ModelSpec, module: str, *, seed: int) -> str:
        """The digest of a build of ``spec`` (defined in module ``module``) with ``seed``."""
        return build_key(spec, module, seed=seed)

    def build(
        self,
        spec: ModelSpec,
        module: str,
        repo: Path,
        *,
        seed: int,
        replace: bool,
        loaded_before: set[str],
    ) -> BuildResult:
        """Version 1 of ``spec`` in ``repo``: restored when an entry matches (unless ``replace``), else
        built and kept. ``loaded_before``: the modules imported before the build began."""
        key = self.key(spec, module, seed=seed)
        entry = self.entry(spec.name, key)
        if not replace:
            try:
                restored = self.restore(spec.name, key, repo / spec.name)
            except OSError as exc:  # an unreadable cache costs a build, not the command
                log.warning("build_cache.unreadable", model=spec.name, entry=str(entry), error=str(exc))
                restored = None
            if restored is not None:
                log.info("build_cache.restored", model=spec.name, entry=str(entry))
                return BuildResult(spec.name, 1, restored, read_metrics(restored), cached=True)
        data_cache = TrainingDataCache(self.root.parent / "training-data")
        result = build_spec(spec, repo, version=1, seed=seed, replace=True, data_cache=data_cache)
        if self.key(spec, module, seed=seed) != key:
            # The sources changed while it trained: the build may be of neither version of them.
            log.warning("build_cache.sources_changed", model=spec.name)
            return result
        try:
            self.store(spec.name, key, result.path, loaded_before=loaded_before)
        except OSError as exc:  # a read-only home (a container) keeps the build, not a copy of it
            log.warning("build_cache.not_stored", model=spec.name, root=str(self.root), error=str(exc))
        return result

    def entry(self, model: str, key: str) -> Path:
        """The folder of one cache entry."""
        return self.root / model / key

    def restore(self, model: str, key: str, model_dir: Path) -> Path | None:
        """Put the cached version 1 in ``model_dir/1`` (and the model's configs from its card); ``None``
        when there is no entry or a module it lists has changed."""
        entry = self.entry(model, key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        for name, digest in manifest.get("modules", {}).items():
            path = Path(name)
            if not path.is_file() or file_digest(path) != digest:
                return None
        staging = model_dir / ".1.restoring"
        shutil.rmtree(staging, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(entry / "version", staging)
        if _file_sizes(staging) != manifest.get("files"):  # damaged, or pruned while it was copied
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        final = rename_into_place(staging, model_dir / "1")
        os.utime(entry)  # the entries kept are the ones used most recently
        write_configs(model_dir, read_card(final))
        return final

    def store(self, model: str, key: str, version_dir: Path, *, loaded_before: set[str]) -> Path:
        """Keep a copy of a fresh build, with the digests of the modules it imported from outside the
        hashed sources and the installed distributions; the oldest entries beyond a few are removed."""
        hashed = tuple(package_dir(p) for p in SOURCE_PACKAGES) + _library_roots()
        modules = {
            str(path): file_digest(path)
            for path in sorted(_module_files(set(sys.modules) - loaded_before))
            if not any(path.is_relative_to(root) for root in hashed)
        }
        final = self.entry(model, key)
        if (final / MANIFEST).exists():  # a build of the same inputs is kept already, and may be being read
            os.utime(final)
            return final
        staging = final.with_name(f".{key}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(version_dir, staging / "version", ignore=shutil.ignore_patterns("__pycache__"))
        document = {"format": FORMAT, "modules": modules, "files": _file_sizes(staging / "version")}
        (staging / MANIFEST).write_text(json.dumps(document, indent=2))
        shutil.rmtree(final, ignore_errors=True)  # an entry without a manifest is an interrupted store
        try:
            staging.rename(final)
        except OSError:  # another build stored the same key meanwhile; theirs is as good
            shutil.rmtree(staging, ignore_errors=True)
        self._prune(model)
        return final

    def _prune(self, model: str) -> None:
        entries = [p for p in (self.root / model).iterdir() if p.is_dir() and not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[KEPT_PER_MODEL:]:
            shutil.rmtree(stale, ignore_errors=True)
