"""`dlstream fuzz`: the payload decoders under mutated inputs."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("fuzz")
@click.option("--target", "names", multiple=True, help="Target to fuzz (repeatable; default: all).")
@click.option("--seconds", default=600.0, show_default=True, help="Time per target.")
@click.option("--seed", default=0, show_default=True, help="Seed of the mutations.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path(".dlstream/fuzz"),
    show_default=True,
    help="Where findings (input and traceback) are written.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on one line.")
def fuzz_cmd(names: tuple[str, ...], seconds: float, seed: int, out_dir: Path, as_json: bool) -> None:
    """Feed mutated inputs to the contract parsers and payload decoders for a set time; report executions
    and findings (an error other than the target's own, or an input slower than a second). Exits 1 on
    findings."""
    from tqdm import tqdm

    from dlstream.tools.fuzz.runner import fuzz
    from dlstream.tools.fuzz.targets import targets

    known = targets()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise click.BadParameter(f"unknown target {', '.join(unknown)} (known: {', '.join(known)})")
    chosen = [known[name] for name in names] if names else list(known.values())
    reports = []
    for target in tqdm(chosen, desc="fuzz", unit="target", disable=None):
        reports.append(fuzz(target, seconds=seconds, out_dir=out_dir, seed=seed).as_dict())
    findings = sum(len(r["findings"]) for r in reports)
    click.echo(json.dumps({"targets": reports, "findings": findings}, indent=None if as_json else 2))
    if findings:
        raise SystemExit(1)
