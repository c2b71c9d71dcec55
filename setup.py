"""One import namespace, ``dlstream``, from two source roots (PEP 420, no ``dlstream/__init__.py``):
``services/`` holds the domain, adapters, services, client, command line and tools; ``pipelines/`` holds the
model SDK and the model repository's admin. pyproject.toml has everything else."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = ("services", "pipelines")


def _packages() -> dict[str, str]:
    """Each package of the namespace and the folder it comes from."""
    found: dict[str, str] = {}
    for root in ROOTS:
        for package in find_namespace_packages(root, include=["dlstream.*"]):
            folder = Path(root, *package.split("."))
            if (folder / "__init__.py").exists():
                found[package] = folder.as_posix()
    return found


setup(packages=list(_packages()), package_dir=_packages())
