"""The ``dlstream`` command line: parses arguments and dispatches; the work lives in the services."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from services.common.config_docs import markdown_table
from services.common.contract import Modality
from services.common.cpu_sharing import share_cores_while_waiting
from services.common.errors import DlstreamError
from services.common.logs import configure_logging
from services.common.settings import Settings, load_settings
from services.stack.local_stack import LocalStack, ServiceStatus


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _repository(ctx: click.Context) -> Path:
    return Path.cwd() / _settings(ctx).triton.model_repository


def _stack(ctx: click.Context, secure: bool = False) -> LocalStack:
    settings = _settings(ctx)
    if secure:
        settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"secure": True})})
    return LocalStack(settings, project_root=Path.cwd())


_secure_option = click.option(
    "--secure",
    is_flag=True,
    help="The secure stack (in `<run_dir>-secure`); same as DLSTREAM_STACK__SECURE=true.",
)


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """dlstream: streaming inference for deep-learning models on Kafka and Triton."""
    ctx.obj = load_settings()
    configure_logging(ctx.obj.log)


@cli.group()
def stack() -> None:
    """The local stack (Kafka, Redis, Triton) as child processes, no Docker."""


@stack.command("install")
@click.pass_context
def stack_install(ctx: click.Context) -> None:
    """Fetch the Kafka jars and check the binaries the stack needs."""
    _stack(ctx).install()
    click.echo("stack dependencies are installed")


@stack.command("up")
@click.option(
    "--secure",
    is_flag=True,
    help="Kafka over SASL_SSL with SCRAM users, Redis over TLS with ACL users, Triton's control API behind "
    "a key, in a run directory of its own (`<run_dir>-secure`); same as DLSTREAM_STACK__SECURE=true.",
)
@click.pass_context
def stack_up(ctx: click.Context, secure: bool) -> None:
    """Start what is not running and wait until every service is healthy; publish the repository's
    reference statistics to Redis for the drift monitor."""
    local = _stack(ctx, secure)
    _print_status(local.up(), as_json=False)
    if local.security is not None:
        click.echo(
            f"secure stack: clients connect with the settings in {local.security.client_env_path}\n"
            f"  set -a; . {local.security.client_env_path}; set +a\n"
            f"  models add/rollback/remove (Triton's control key) with {local.security.admin_env_path}"
        )


@stack.command("down")
@_secure_option
@click.pass_context
def stack_down(ctx: click.Context, secure: bool) -> None:
    """Stop every process this stack started (by recorded pid, never by name)."""
    _stack(ctx, secure).down()
    click.echo("stack stopped")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@_secure_option
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool, secure: bool) -> None:
    """Report each service; exits 1 when one is dead, unhealthy or stopped."""
    statuses = _stack(ctx, secure).status()
    _print_status(statuses, as_json=as_json)
    if not all(s.ok for s in statuses):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", type=click.Choice(["kafka", "redis", "triton", "inference", "drift"]))
@click.option("-n", "--lines", default=50, show_default=True, help="How many of the last lines.")
@_secure_option
@click.pass_context
def stack_logs(ctx: click.Context, service: str, lines: int, secure: bool) -> None:
    """Print the last lines of a service's log."""
    for line in _stack(ctx, secure).log_lines(service, lines):
        click.echo(line)


def _print_status(statuses: list[ServiceStatus], as_json: bool) -> None:
    if as_json:
        payload = {
            s.name: {"state": s.state, "pid": s.pid, "ports": s.ports, "log": s.log_path} for s in statuses
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for s in statuses:
        ports = " ".join(f"{purpose}={host}:{port}" for purpose, (host, port) in s.ports.items())
        click.echo(f"{s.name:<10} {s.state:<10} pid={s.pid or '-':<8} {ports}")


@cli.group()
def models() -> None:
    """Build and inspect the models of the Triton repository."""
    # Builds and retraining jobs run beside the stack's own processes.
    share_cores_while_waiting()


@models.command("build")
@click.option("--model", "names", multiple=True, help="Model to build (repeatable); all when omitted.")
@click.option("--seed", default=0, show_default=True, help="Seed of data splits, initialisation and order.")
@click.option("--replace", is_flag=True, help="Rebuild a version that already exists (not from the cache).")
@click.option(
    "--no-cache", is_flag=True, help="Train even when the build cache holds a build of the same inputs."
)
@click.option("--publish", is_flag=True, help="Then publish the reference statistics to Redis.")
@click.pass_context
def models_build(
    ctx: click.Context, names: tuple[str, ...], seed: int, replace: bool, no_cache: bool, publish: bool
) -> None:
    """Train, evaluate and export the registered model plugins (version 1) that are not built yet, with
    their cards and Triton configs; prints held-out accuracy. A build whose inputs (code, installed
    packages, data, seed) match one kept in the build cache (``<stack.cache_dir>/builds``) is restored."""
    from pipelines.build_cache import BuildCache
    from pipelines.registry import build_models

    repo = _repository(ctx)
    cache = None if no_cache else BuildCache(_settings(ctx).stack.cache_dir / "builds")
    for result in build_models(repo, list(names), seed=seed, replace=replace, cache=cache):
        metrics = result.metrics
        evaluation = metrics.get("evaluation", "held-out samples")
        how = "restored from the build cache" if result.cached else f"{metrics['build_seconds']}s"
        click.echo(
            f"{result.model:<14} v{result.version}  accuracy {metrics['accuracy']:.4f} on "
            f"{metrics['samples']} {evaluation}, {metrics['classes']} classes, {how}  -> {result.path}"
        )
    if publish:
        from pipelines.publish import publish_references

        published = publish_references(_settings(ctx), repo, names)
        click.echo(f"published the reference statistics of {len(published)} model versions to Redis")


@models.command("retrain-worker")
@click.pass_context
def models_retrain_worker(ctx: click.Context) -> None:
    """Serve the monitor's queued retraining requests (launcher ``queue``) one at a time until SIGTERM;
    runs where the repository is mounted, so the monitor needs none."""
    import signal
    import threading

    from services.retrain.launchers import serve_retrain_queue

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ran = serve_retrain_queue(_settings(ctx), repository=_repository(ctx), stop=stop)
    click.echo(f"retrain worker stopped after {ran} jobs")


@models.command("publish")
@click.option("--model", "names", multiple=True, help="Model to publish (repeatable); all when omitted.")
@click.pass_context
def models_publish(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Publish the reference statistics of the repository's versions to Redis (the drift monitor reads
    them there); builds and promotions do it, this does it again."""
    from pipelines.publish import publish_references

    for model, version in publish_references(_settings(ctx), _repository(ctx), names):
        click.echo(f"{model:<14} v{version}  reference statistics published")


@models.command("add")
@click.argument("name")
@click.option("--modality", type=click.Choice([m.value for m in Modality]), required=True)
@click.option("--onnx", "onnx_file", type=click.Path(path_type=Path), help="An ONNX model file.")
@click.option(
    "--torchscript", "torchscript_file", type=click.Path(path_type=Path), help="A TorchScript file."
)
@click.option(
    "--triton",
    "triton_dir",
    type=click.Path(path_type=Path),
    help="A Triton model folder that takes the payload bytes (any backend, an ensemble).",
)
@click.option(
    "--labels", "labels_file", type=click.Path(path_type=Path), required=True, help="One label a line."
)
@click.option(
    "--reference",
    "reference_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Samples like the traffic to expect (subfolders named after labels make them labelled).",
)
@click.option("--preprocess", "pairs", multiple=True, metavar="KEY=VALUE", help="Declared preprocessing.")
@click.option(
    "--outputs", type=click.Choice(["logits", "probabilities"]), default="logits", show_default=True
)
@click.option(
    "--embedding-output", type=int, help="Index of an embedding output (drift's outlier test uses it)."
)
@click.option(
    "--train-command", help="Retrains the model: {data} {labels} {model} {output} {work} are filled in."
)
@click.option(
    "--default", "is_default", is_flag=True, help="Serve events of the modality that name no model."
)
@click.pass_context
def models_add(
    ctx: click.Context,
    name: str,
    modality: str,
    onnx_file: Path | None,
    torchscript_file: Path | None,
    triton_dir: Path | None,
    labels_file: Path,
    reference_dir: Path,
    pairs: tuple[str, ...],
    outputs: str,
    embedding_output: int | None,
    train_command: str | None,
    is_default: bool,
) -> None:
    """Serve your own model: check it against its labels and reference samples, write version 1 with its
    card and configs, publish its reference statistics and load it into every Triton replica."""
    import shlex

    from pipelines.add import AddRequest
    from pipelines.manage import add_and_serve, add_triton_and_serve

    formats = (("onnx", onnx_file), ("torchscript", torchscript_file), ("triton", triton_dir))
    given = [(f, p) for f, p in formats if p is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --onnx FILE, --torchscript FILE and --triton DIR")
    source_format, model_path = given[0]
    preprocess: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--preprocess {pair!r}: expected KEY=VALUE")
        preprocess[key.strip()] = value.strip()
    request = AddRequest(
        name=name,
        modality=Modality(modality),
        source_format=source_format,  # type: ignore[arg-type]
        model_file=model_path,
        labels_file=labels_file,
        reference_dir=reference_dir,
        preprocess=preprocess,
        default=is_default,
        scores_are="logits" if outputs == "logits" else "probabilities",
        embedding_output=embedding_output,
        train_command=shlex.split(train_command) if train_command else None,
    )
    add = add_triton_and_serve if source_format == "triton" else add_and_serve
    served = add(_settings(ctx), _repository(ctx), request)
    card = served.added.card
    accuracy = "" if card.accuracy is None else f", accuracy {card.accuracy:.3f} on the labelled reference"
    where = "through Triton" if source_format == "triton" else "in-process"
    click.echo(
        f"{name} v{card.version} ({card.modality.value}, {card.source_format}, "
        f"{len(card.labels)} classes{accuracy}): "
        f"{card.metrics['samples']} reference samples at {served.added.samples_per_s:.1f}/s {where}; "
        f"served by Triton after {served.load_s:.1f} s -> {served.added.path}"
    )


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of a table.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Every model: modality, format, versions, serving version, default, accuracy, open alert, retraining."""
    from pipelines.manage import model_rows

    repo = _repository(ctx)
    for row in model_rows(_settings(ctx), repo if repo.is_dir() else None):
        if as_json:
            click.echo(json.dumps(row))
            continue
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        serving = ",".join(map(str, row["serving"])) or "-"
        click.echo(
            f"{row['name']:<16} {row['modality']:<6} {row['format']:<12} "
            f"versions {','.join(map(str, row['versions'])):<8} serving {serving:<4} "
            f"{'default' if row['default'] else '':<8} accuracy {accuracy:<6} "
            f"alert {'OPEN' if row['open_alert'] else '-':<5} retraining {row['retraining']}"
            f" (last: {row['last_retraining'] or '-'})" + (f"  {row['problem']}" if row["problem"] else "")
        )


@models.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=int, help="The version to serve (default: the one before the serving one).")
@click.pass_context
def models_rollback(ctx: click.Context, name: str, to: int | None) -> None:
    """Serve an earlier version on every Triton replica (the monitor follows the versions predictions
    name)."""
    from pipelines.manage import rollback

    was, now = rollback(_settings(ctx), _repository(ctx), name, to)
    click.echo(f"{name}: every Triton replica serves version {now} (was {was})")


@models.command("remove")
@click.argument("name")
@click.pass_context
def models_remove(ctx: click.Context, name: str) -> None:
    """Unload a model from every Triton replica and delete it from the repository and Redis."""
    from pipelines.manage import remove

    remove(_settings(ctx), _repository(ctx), name)
    click.echo(f"{name} removed")


@models.command("retrain")
@click.option("--model", help="Model to retrain (default: DLSTREAM_RETRAIN__MODEL, set by the monitor).")
@click.option(
    "--epochs", type=int, help="Training epochs (default: DLSTREAM_RETRAIN__EPOCHS or the build's)."
)
@click.pass_context
def models_retrain(ctx: click.Context, model: str | None, epochs: int | None) -> None:
    """Train on base data plus labelled feedback; promote version N+1 only if it beats the serving one."""
    from services.retrain.job import run_retraining

    settings = _settings(ctx)
    name = model or settings.retrain.model
    if not name:
        raise click.UsageError("name the model: --model or DLSTREAM_RETRAIN__MODEL")
    if epochs is not None:
        settings = settings.model_copy(
            update={"retrain": settings.retrain.model_copy(update={"epochs": epochs})}
        )
    report = run_retraining(
        settings, model=name, alert_id=settings.retrain.alert_id, repository=_repository(ctx)
    )
    click.echo(json.dumps(report))


@cli.group()
def drift() -> None:
    """The drift monitor: windows of predictions in Redis, alerts, retraining."""


@drift.command("run")
@click.pass_context
def drift_run(ctx: click.Context) -> None:
    """Run the drift monitor until SIGTERM."""
    from services.drift.app import build_app
    from services.drift.metrics import DriftMetrics
    from services.retrain.launchers import LocalLauncher, make_launcher

    settings = _settings(ctx)
    metrics = DriftMetrics()
    _serve_metrics(settings.drift.metrics_port, settings.drift.bind_host, metrics.registry)
    launcher = make_launcher(settings, repository=_repository(ctx))
    try:
        _run_faust(build_app(settings, metrics=metrics, launcher=launcher), settings)
    finally:
        if isinstance(launcher, LocalLauncher):
            launcher.stop()


@drift.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.pass_context
def drift_status(ctx: click.Context, as_json: bool) -> None:
    """Per model: versions with their windows and accuracy, the open alert, feedback, retraining."""
    from services.drift.store import with_store

    overview = with_store(_settings(ctx), lambda store: store.overview())
    if as_json:
        click.echo(json.dumps(overview))
        return
    from services.drift.status import status_lines

    for line in status_lines(overview):
        click.echo(line)


@drift.command("alerts")
@click.option("--limit", default=20, show_default=True, help="How many of the newest alert records.")
@click.pass_context
def drift_alerts(ctx: click.Context, limit: int) -> None:
    """Alert records, newest first, one JSON object per line (raised and resolved)."""
    from services.drift.store import with_store

    for alert in with_store(_settings(ctx), lambda store: store.alerts(limit)):
        click.echo(json.dumps(alert))


@drift.command("report")
@click.option("--model", default=None, help="One model (default: every model the monitor has seen).")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="HTML file."
)
@click.pass_context
def drift_report(ctx: click.Context, model: str | None, out: Path) -> None:
    """Write the drift report page: p-values over time, class mix and confidence, accuracy, alerts, jobs."""
    from services.drift.report import render_report
    from services.drift.store import with_store

    settings = _settings(ctx)
    data = with_store(settings, lambda store: store.report_data(model))
    out.write_text(render_report(data, false_alarm_rate=settings.drift.false_alarm_rate))
    click.echo(f"{out}: {len(data['models'])} model(s)")


@cli.command("label")
@click.argument("request_id", required=False)
@click.argument("label", required=False)
@click.option(
    "--published",
    type=click.Path(exists=True, path_type=Path),
    help="Lines of `publish --print-ids`: each request is labelled with its file's folder name.",
)
@click.pass_context
def label_cmd(ctx: click.Context, request_id: str | None, label: str | None, published: Path | None) -> None:
    """Send the true LABEL of request REQUEST_ID to the labels topic (feedback for drift and retraining), or
    label every request of a ``publish --print-ids`` output by the folder its file was in."""
    from services.client.publisher import Publisher

    if published is None and not (request_id and label):
        raise click.UsageError("give REQUEST_ID LABEL, or --published FILE")
    pairs = [(request_id, label)] if published is None else []
    if published is not None:
        for line in published.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                pairs.append((str(record["id"]), Path(str(record["path"])).parent.name))
    with Publisher(_settings(ctx)) as publisher:
        for rid, true in pairs:
            publisher.publish_label(str(rid), str(true))
    if published is not None:
        click.echo(f"sent {len(pairs)} labels")


@cli.group()
def inference() -> None:
    """The inference workers (Faust)."""


@inference.command("run")
@click.pass_context
def inference_run(ctx: click.Context) -> None:
    """Run one inference worker until SIGTERM (finishes the batch in flight, commits, exits)."""
    from services.inference.app import build_app
    from services.inference.metrics import InferenceMetrics

    settings = _settings(ctx)
    metrics = InferenceMetrics()
    _serve_metrics(settings.inference.metrics_port, settings.inference.bind_host, metrics.registry)
    _run_faust(build_app(settings, metrics=metrics), settings)


def _serve_metrics(port: int, host: str, registry: object) -> None:
    from prometheus_client import start_http_server

    if port:
        start_http_server(port, addr=host, registry=registry)  # type: ignore[arg-type]


def _run_faust(app: Any, settings: Settings) -> None:
    from services.common.faust_worker import STOP_MARGIN_S, DeadlineWorker

    # Faust logs through the same JSON handler as everything else, without its own handler or banner.
    worker = DeadlineWorker(
        app,
        stop_deadline_s=settings.inference.drain_timeout_s + STOP_MARGIN_S,
        loglevel=settings.log.level.lower(),
        override_logging=False,
        quiet=True,
    )
    worker.spinner = None  # its terminal escapes would land in the log
    worker.execute_from_commandline()


MODALITY = click.Choice([m.value for m in Modality])


@cli.command("publish")
@click.argument("modality", type=MODALITY)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rate", type=float, help="Events per second (as fast as possible when omitted).")
@click.option("--model", help="Ask for this model (ce_model) instead of the modality's default.")
@click.option("--lines", is_flag=True, help="Text: one event per non-empty line instead of per file.")
@click.option("--print-ids", is_flag=True, help="Print one JSON line {id, path} per event sent.")
@click.pass_context
def publish(
    ctx: click.Context,
    modality: str,
    paths: tuple[Path, ...],
    rate: float | None,
    model: str | None,
    lines: bool,
    print_ids: bool,
) -> None:
    """Publish files, or the files of folders, as request events (progress bar on stderr)."""
    from services.client.files import expand_paths
    from services.client.publisher import Publisher, file_payloads

    kind = Modality(modality)
    files = expand_paths(paths, kind)
    with Publisher(_settings(ctx)) as publisher:
        sent = publisher.publish_all(
            kind,
            file_payloads(files, kind, lines=lines),
            rate=rate,
            model=model,
            total=None if lines else len(files),
        )
    if print_ids:
        for event, item in sent:
            click.echo(json.dumps({"id": event.id, "path": item.origin}))
    click.echo(f"published {len(sent)} {modality} events to {publisher.topic(kind)}", err=True)


@cli.command("subscribe")
@click.option("--modality", "modalities", multiple=True, type=MODALITY, help="Only these (repeatable).")
@click.option("--follow", is_flag=True, help="Keep waiting for new predictions (Ctrl-C to stop).")
@click.option("--id", "ids", multiple=True, help="Only this request id (repeatable); ends once all are seen.")
@click.option("--latest", is_flag=True, help="Start at the end of the topics instead of the beginning.")
@click.option("--idle-timeout", type=float, help="With --follow: stop after this many seconds without news.")
@click.pass_context
def subscribe_cmd(
    ctx: click.Context,
    modalities: tuple[str, ...],
    follow: bool,
    ids: tuple[str, ...],
    latest: bool,
    idle_timeout: float | None,
) -> None:
    """Print predictions as JSON lines, each request id once (redeliveries are dropped)."""
    from services.client.subscriber import subscribe

    for prediction in subscribe(
        _settings(ctx),
        modalities=[Modality(m) for m in modalities] or list(Modality),
        follow=follow,
        ids=ids,
        start="latest" if latest else "beginning",
        idle_timeout_s=idle_timeout,
    ):
        click.echo(prediction.model_dump_json())


@cli.group()
def dlq() -> None:
    """The dead-letter topic."""


@dlq.command("list")
@click.option("--reason", "reasons", multiple=True, help="Only this dlq-reason (repeatable).")
@click.option("--id", "ids", multiple=True, help="Only this request id (repeatable).")
@click.pass_context
def dlq_list(ctx: click.Context, reasons: tuple[str, ...], ids: tuple[str, ...]) -> None:
    """Print dead letters as JSON lines (reason, error, source, headers; payload by size)."""
    from services.client.dlq import dead_letters

    for stored in dead_letters(_settings(ctx), reasons=reasons, ids=ids):
        click.echo(json.dumps(stored.summary()))


@dlq.command("replay")
@click.option("--reason", "reasons", multiple=True, help="Only this dlq-reason (repeatable).")
@click.option("--id", "ids", multiple=True, help="Only this request id (repeatable).")
@click.option("--dry-run", is_flag=True, help="List what would be replayed, send nothing.")
@click.pass_context
def dlq_replay(ctx: click.Context, reasons: tuple[str, ...], ids: tuple[str, ...], dry_run: bool) -> None:
    """Send matching dead letters back to their source topics (after fixing what made them fail)."""
    from services.client.dlq import dead_letters, replay
    from services.client.publisher import Publisher

    settings = _settings(ctx)
    letters = list(dead_letters(settings, reasons=reasons, ids=ids))
    if dry_run:
        for stored in letters:
            click.echo(json.dumps(stored.summary()))
        return
    with Publisher(settings) as publisher:
        count = replay(publisher, letters)
    click.echo(f"replayed {count} dead letters", err=True)


@cli.command("demo")
@click.option("--per-modality", default=30, show_default=True, help="Held-out samples sent per modality.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Events per second.")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Give up after this long without a prediction."
)
@click.pass_context
def demo(ctx: click.Context, per_modality: int, rate: float, timeout: float) -> None:
    """Stream held-out samples of every modality through the running stack and show the predictions."""
    from services.client.demo import run_demo

    settings = _settings(ctx)
    score = run_demo(
        settings,
        per_modality=per_modality,
        rate=rate,
        timeout_s=timeout,
        show=click.echo,
    )
    for modality, received in score.received.items():
        click.echo(f"{modality}: {received} predictions, {score.correct[modality]} match the true label")
    if sum(score.received.values()) < score.sent:
        raise DlstreamError(f"only {sum(score.received.values())} of {score.sent} predictions arrived")


@cli.group()
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("models")
@click.option(
    "--model", "names", multiple=True, help="Model to measure (repeatable); all built when omitted."
)
@click.option("--seconds", default=3.0, show_default=True, help="Measuring time of each figure.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (the default output is JSON too)."
)
@click.pass_context
def bench_models_cmd(ctx: click.Context, names: tuple[str, ...], seconds: float, as_json: bool) -> None:
    """Triton throughput at batch 1 and its best batch against in-process torch, per model."""
    from services.bench.models import bench_models
    from services.stack.triton_server import loadable_models

    settings = _settings(ctx)
    repo = _repository(ctx)
    models = list(names) or [m for m in loadable_models(repo) if m != "healthcheck"]
    report = bench_models(settings, repo, models, seconds)
    click.echo(json.dumps(report, indent=None if as_json else 2))


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
    idle_events: int,
    workers: int,
    plot_path: Path | None,
    as_json: bool,
) -> None:
    """The floor, idle latency and the latency curve; pipeline vs direct Triton vs a naive agent; with
    ``--workers N`` the throughput of 1 to N workers."""
    from services.bench.stream import bench_stream

    settings = _settings(ctx)
    report = bench_stream(
        settings,
        _repository(ctx),
        model=model,
        events=events,
        naive_events=naive_events,
        runs=runs,
        level_seconds=level_seconds,
        idle_events=idle_events,
        work_dir=Path.cwd() / ".dlstream" / "bench" / time.strftime("%Y%m%d-%H%M%S"),
        workers=workers,
    )
    if plot_path is not None:
        from services.bench.plot import plot_curve

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
    from services.bench.soak import soak, stack_processes

    settings = _settings(ctx)
    processes = stack_processes(_stack(ctx))
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
    from services.bench.drift import MODELS, bench_drift

    report = bench_drift(
        _settings(ctx),
        models=models or MODELS,
        windows=windows,
        windows_per_split=windows_per_split,
        drifted_windows=drifted_windows,
        window_sizes=window_sizes or (50, 200),
    )
    click.echo(json.dumps(report, indent=None if as_json else 2))


@cli.command("fuzz")
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

    from services.fuzz.runner import fuzz
    from services.fuzz.targets import targets

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


@cli.group()
def config() -> None:
    """Inspect the settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """The effective settings as JSON (secrets masked)."""
    click.echo(_settings(ctx).model_dump_json(indent=2))


@config.command("docs")
def config_docs() -> None:
    """The configuration table of the README (Markdown)."""
    click.echo(markdown_table())


# Top-level modules that only the "models" extra installs (see pyproject.toml).
MODELS_EXTRA_MODULES = frozenset(
    {
        "torch",
        "torchvision",
        "scipy",
        "sklearn",
        "PIL",
        "mlxtend",
        "skimage",
        "sentence_transformers",
        "efficientnet_lite_pytorch",
        "onnxruntime",
    }
)


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The message for a command that needs the ``models`` extra on a base install, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in MODELS_EXTRA_MODULES:
        return None
    return (
        f"this command builds, trains or runs models and needs the 'models' extra (missing module {top}): "
        "pip install 'dlstream[models]'"
    )


def main() -> None:
    """Console-script entry point: project errors become one line and exit code 2; so does a command that
    needs the ``models`` extra on a base install."""
    try:
        cli(standalone_mode=True)
    except DlstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
