"""`dlstream models`: build, publish, add, list, roll back, remove and retrain models."""

from __future__ import annotations

from pathlib import Path

import click

from dlstream.cli.context import repository_of, settings_of
from dlstream.domain.card import TASKS
from dlstream.domain.contract import Modality
from dlstream.runtime.cpu_sharing import share_cores_while_waiting


@click.group()
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
    from dlstream.models.build_cache import BuildCache
    from dlstream.models.registry import build_models

    repo = repository_of(ctx)
    cache = None if no_cache else BuildCache(settings_of(ctx).stack.cache_dir / "builds")
    for result in build_models(repo, list(names), seed=seed, replace=replace, cache=cache):
        metrics = result.metrics
        evaluation = metrics.get("evaluation", "held-out samples")
        how = "restored from the build cache" if result.cached else f"{metrics['build_seconds']}s"
        click.echo(
            f"{result.model:<14} v{result.version}  accuracy {metrics['accuracy']:.4f} on "
            f"{metrics['samples']} {evaluation}, {metrics['classes']} classes, {how}  -> {result.path}"
        )
    if publish:
        from dlstream.repository.references import publish_references

        published = publish_references(settings_of(ctx), repo, names)
        click.echo(f"published the reference statistics of {len(published)} model versions to Redis")


@models.command("retrain-worker")
@click.pass_context
def models_retrain_worker(ctx: click.Context) -> None:
    """Serve the monitor's queued retraining requests (launcher ``queue``) one at a time until SIGTERM;
    runs where the repository is mounted, so the monitor needs none."""
    import signal
    import threading

    from dlstream.retrain.launchers import serve_retrain_queue

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ran = serve_retrain_queue(settings_of(ctx), repository=repository_of(ctx), stop=stop)
    click.echo(f"retrain worker stopped after {ran} jobs")


@models.command("publish")
@click.option("--model", "names", multiple=True, help="Model to publish (repeatable); all when omitted.")
@click.pass_context
def models_publish(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Publish the reference statistics of the repository's versions to Redis (the drift monitor reads
    them there); builds and promotions do it, this does it again."""
    from dlstream.repository.references import publish_references

    for model, version in publish_references(settings_of(ctx), repository_of(ctx), names):
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
    "--task",
    type=click.Choice(list(TASKS)),
    default="classification",
    show_default=True,
    help="What the model predicts.",
)
@click.option(
    "--task-option",
    "task_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="The task's settings: threshold (multilabel); score_threshold, iou_threshold, class_agnostic, "
    "max_detections, box_format, boxes_normalised, boxes, box_classes (detection); dims, normalise "
    "(embedding); vocabulary, blank, max_length (sequence).",
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(path_type=Path),
    help="One label a line, in output order: classes, or a regressor's value names (none for embedding "
    "and sequence models).",
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
    task: str,
    task_pairs: tuple[str, ...],
    labels_file: Path | None,
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

    from dlstream.repository.add import AddRequest
    from dlstream.repository.manage import add_and_serve, add_triton_and_serve

    formats = (("onnx", onnx_file), ("torchscript", torchscript_file), ("triton", triton_dir))
    given = [(f, p) for f, p in formats if p is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --onnx FILE, --torchscript FILE and --triton DIR")
    source_format, model_path = given[0]
    preprocess = _key_values("--preprocess", pairs)
    task_options = _key_values("--task-option", task_pairs)
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
        task=task,  # type: ignore[arg-type]
        task_options=task_options,
    )
    add = add_triton_and_serve if source_format == "triton" else add_and_serve
    served = add(settings_of(ctx), repository_of(ctx), request)
    card = served.added.card
    accuracy = "" if card.accuracy is None else f", accuracy {card.accuracy:.3f} on the labelled reference"
    where = "through Triton" if source_format == "triton" else "in-process"
    said = [card.modality.value, card.task.kind, card.source_format]
    if card.labels:
        said.append(f"{len(card.labels)} {'values' if card.task.kind == 'regression' else 'classes'}")
    click.echo(
        f"{name} v{card.version} ({', '.join(said)}{accuracy}): "
        f"{card.metrics['samples']} reference samples at {served.added.samples_per_s:.1f}/s {where}; "
        f"served by Triton after {served.load_s:.1f} s -> {served.added.path}"
    )


def _key_values(option: str, pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} {pair!r}: expected KEY=VALUE")
        values[key.strip()] = (
            value if option == "--task-option" and key.strip() == "vocabulary" else value.strip()
        )
    return values


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of a table.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Every model: modality, task, format, versions, serving version, default, accuracy, open alert,
    retraining."""
    from dlstream.repository.manage import model_rows

    repo = repository_of(ctx)
    for row in model_rows(settings_of(ctx), repo if repo.is_dir() else None):
        if as_json:
            click.echo(row.model_dump_json())
            continue
        accuracy = "-" if row.accuracy is None else f"{row.accuracy:.3f}"
        serving = ",".join(map(str, row.serving)) or "-"
        click.echo(
            f"{row.name:<16} {row.modality:<6} {row.task:<15} {row.format:<12} "
            f"versions {','.join(map(str, row.versions)):<8} serving {serving:<4} "
            f"{'default' if row.default else '':<8} accuracy {accuracy:<6} "
            f"alert {'OPEN' if row.open_alert else '-':<5} retraining {row.retraining}"
            f" (last: {row.last_retraining or '-'})" + (f"  {row.problem}" if row.problem else "")
        )


@models.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=int, help="The version to serve (default: the one before the serving one).")
@click.pass_context
def models_rollback(ctx: click.Context, name: str, to: int | None) -> None:
    """Serve an earlier version on every Triton replica (the monitor follows the versions predictions
    name)."""
    from dlstream.repository.manage import rollback

    was, now = rollback(settings_of(ctx), repository_of(ctx), name, to)
    click.echo(f"{name}: every Triton replica serves version {now} (was {was})")


@models.command("remove")
@click.argument("name")
@click.pass_context
def models_remove(ctx: click.Context, name: str) -> None:
    """Unload a model from every Triton replica and delete it from the repository and Redis."""
    from dlstream.repository.manage import remove

    remove(settings_of(ctx), repository_of(ctx), name)
    click.echo(f"{name} removed")


@models.command("retrain")
@click.option("--model", help="Model to retrain (default: DLSTREAM_RETRAIN__MODEL, set by the monitor).")
@click.option(
    "--epochs", type=int, help="Training epochs (default: DLSTREAM_RETRAIN__EPOCHS or the build's)."
)
@click.pass_context
def models_retrain(ctx: click.Context, model: str | None, epochs: int | None) -> None:
    """Train on base data plus labelled feedback; promote version N+1 only if it beats the serving one."""
    from dlstream.retrain.job import run_retraining

    settings = settings_of(ctx)
    name = model or settings.retrain.model
    if not name:
        raise click.UsageError("name the model: --model or DLSTREAM_RETRAIN__MODEL")
    if epochs is not None:
        settings = settings.model_copy(
            update={"retrain": settings.retrain.model_copy(update={"epochs": epochs})}
        )
    report = run_retraining(
        settings, model=name, alert_id=settings.retrain.alert_id, repository=repository_of(ctx)
    )
    click.echo(report.to_json())
