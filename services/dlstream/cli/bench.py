"""`dlstream bench`: the benchmarks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from dlstream.cli.context import repository_of, settings_of
from dlstream.cli.stack import local_stack


@click.group()
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("models")
@click.option(
    "--model", "names", multiple=True, help="Model to measure (repeatable); all built when omitted."
)
@click.option("--seconds", default=3.0, show_default=True, help="Measuring time of each figure.")
@click.option(
    "--batches",
    default="1,4,16,32",
    show_default=True,
    help="Request sizes to measure Triton at (comma-separated).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (the default output is JSON too)."
)
@click.pass_context
def bench_models_cmd(
    ctx: click.Context, names: tuple[str, ...], seconds: float, batches: str, as_json: bool
) -> None:
    """Triton throughput at batch 1 and its best batch against the same model in-process, per model (of
    any task: an added model is measured on its reference samples)."""
    from dlstream.tools.bench.models import bench_models
    from dlstream.tools.stack.triton_server import loadable_models

    settings = settings_of(ctx)
    repo = repository_of(ctx)
    models = list(names) or [m for m in loadable_models(repo) if m != "healthcheck"]
    try:
        sizes = tuple(sorted({int(part) for part in batches.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(
            f"{batches!r}: request sizes such as 1,4,16", param_hint="--batches"
        ) from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{batches!r}: request sizes of 1 or more", param_hint="--batches")
    report = bench_models(settings, repo, models, seconds, sizes)
    click.echo(report.model_dump_json(indent=None if as_json else 2))


def _fractions(_: click.Context, __: click.Parameter, value: str) -> tuple[float, ...]:
    from dlstream.tools.bench.latency import parse_levels

    try:
        return parse_levels(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@bench.command("stream")
@click.option("--model", default="digits", show_default=True, help="Image model to measure.")
@click.option(
    "--events",
    default=10000,
    show_default=True,
    help="Events of each throughput run (a drain of several seconds: the worker's ramp-up weighs little).",
)
@click.option("--naive-events", default=1000, show_default=True, help="Events of the naive agent's run.")
@click.option("--runs", default=5, show_default=True, help="Throughput runs; the ratio is their median.")
@click.option("--level-seconds", default=60.0, show_default=True, help="How long each load level is held.")
@click.option(
    "--levels",
    default="0.1,0.3,0.5,0.7,0.9",
    show_default=True,
    callback=_fractions,
    help="Load levels of the latency curve, as fractions of the measured maximum, comma-separated; the "
    "headline p50 and p99 are those of the level nearest 0.5.",
)
@click.option(
    "--idle-events",
    default=300,
    show_default=True,
    help="Single events of the idle latency (a p99 of fewer is set by the slowest one or two).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Also measure the throughput of 1 to N workers of one group (scale_out).",
)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Write the latency curve as PNG.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on one line.")
@click.pass_context
def bench_stream_cmd(
    ctx: click.Context,
    model: str,
    events: int,
    naive_events: int,
    runs: int,
    level_seconds: float,
    levels: tuple[float, ...],
    idle_events: int,
    workers: int,
    plot_path: Path | None,
    as_json: bool,
) -> None:
    """The floor, idle latency and the latency curve; pipeline vs direct Triton vs a naive agent; with
    ``--workers N`` the throughput of 1 to N workers."""
    from dlstream.tools.bench.stream import bench_stream

    settings = settings_of(ctx)
    report = bench_stream(
        settings,
        repository_of(ctx),
        model=model,
        events=events,
        naive_events=naive_events,
        runs=runs,
        level_seconds=level_seconds,
        idle_events=idle_events,
        work_dir=Path.cwd() / ".dlstream" / "bench" / time.strftime("%Y%m%d-%H%M%S"),
        workers=workers,
        load_levels=levels,
    )
    if plot_path is not None:
        from dlstream.tools.bench.plot import plot_curve

        plot_curve(report, plot_path)
    click.echo(json.dumps(report, indent=None if as_json else 2))


@bench.command("soak")
@click.option("--minutes", default=20.0, show_default=True, help="How long the stack is held under load.")
@click.option("--warm-up-minutes", default=2.0, show_default=True, help="Left out of the growth figures.")
@click.option("--period-seconds", default=30.0, show_default=True, help="One latency and memory sample each.")
@click.option("--load", default=0.5, show_default=True, help="Share of the measured maximum to offer.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second (skips measuring)."
)
@click.option("--calibration-events", default=3000, show_default=True, help="Events of the maximum's run.")
@click.option("--model", default="digits", show_default=True, help="Image model whose held-out set is sent.")
@click.option(
    "--process",
    "extra",
    multiple=True,
    metavar="NAME=PID",
    help="Also sample this process group (a worker started outside the stack); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on one line.")
@click.pass_context
def bench_soak_cmd(
    ctx: click.Context,
    minutes: float,
    warm_up_minutes: float,
    period_seconds: float,
    load: float,
    rate: float | None,
    calibration_events: int,
    model: str,
    extra: tuple[str, ...],
    as_json: bool,
) -> None:
    """Hold the running stack at a share of its maximum (half by default) for a set time, sampling the
    resident memory of every process and end-to-end latency; print the growth after warm-up."""
    from dlstream.tools.bench.soak import soak, stack_processes

    settings = settings_of(ctx)
    processes = stack_processes(local_stack(ctx))
    for item in extra:
        name, _, pid = item.partition("=")
        if not name or not pid.isdigit():
            raise click.BadParameter(f"{item!r} is not NAME=PID", param_hint="--process")
        processes[name] = int(pid)
    if not processes:
        raise click.ClickException("no running stack process to sample; start it with `dlstream stack up`")
    report = soak(
        settings,
        processes,
        model=model,
        seconds=minutes * 60,
        warm_up_s=warm_up_minutes * 60,
        period_s=period_seconds,
        rate=rate,
        load=load,
        calibration_events=calibration_events,
    )
    click.echo(json.dumps(report, indent=None if as_json else 2))


@bench.command("drift")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model to measure (repeatable; default: digits, speech_digits and text_topics).",
)
@click.option(
    "--windows", default=5000, show_default=True, help="Undrifted windows per model and window size."
)
@click.option(
    "--windows-per-split",
    default=5,
    show_default=True,
    help="Most disjoint windows cut from one reference / calibration / traffic split (fewer when its "
    "traffic holds fewer); the windows are spread over as many splits as that takes.",
)
@click.option(
    "--window-size",
    "window_sizes",
    multiple=True,
    type=int,
    help="Predictions per window (repeatable; default: 50 and 200).",
)
@click.option(
    "--drifted-windows", default=100, show_default=True, help="Windows of each drifted set (power, delay)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on one line.")
@click.pass_context
def bench_drift_cmd(
    ctx: click.Context,
    models: tuple[str, ...],
    windows: int,
    windows_per_split: int,
    window_sizes: tuple[int, ...],
    drifted_windows: int,
    as_json: bool,
) -> None:
    """Per model and window size: the observed false-alarm rate at 0.01 and 0.05 with its 95 % interval,
    the detection rate and delay on drifted traffic, and the monitor's cost per prediction."""
    from dlstream.tools.bench.drift import MODELS, bench_drift

    report = bench_drift(
        settings_of(ctx),
        models=models or MODELS,
        windows=windows,
        windows_per_split=windows_per_split,
        drifted_windows=drifted_windows,
        window_sizes=window_sizes or (50, 200),
    )
    click.echo(json.dumps(report, indent=None if as_json else 2))
