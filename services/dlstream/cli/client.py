"""The client commands: `publish`, `subscribe`, `label` and `dlq`; they need only the base install."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dlstream.cli.context import MODALITY, settings_of
from dlstream.domain.contract import Modality


@click.command("publish")
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
    from dlstream.client.files import expand_paths
    from dlstream.client.publisher import Publisher, file_payloads

    kind = Modality(modality)
    files = expand_paths(paths, kind)
    with Publisher(settings_of(ctx)) as publisher:
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


@click.command("subscribe")
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
    from dlstream.client.subscriber import subscribe

    for prediction in subscribe(
        settings_of(ctx),
        modalities=[Modality(m) for m in modalities] or list(Modality),
        follow=follow,
        ids=ids,
        start="latest" if latest else "beginning",
        idle_timeout_s=idle_timeout,
    ):
        click.echo(prediction.model_dump_json())


@click.command("label")
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
    from dlstream.client.publisher import Publisher

    if published is None and not (request_id and label):
        raise click.UsageError("give REQUEST_ID LABEL, or --published FILE")
    pairs = [(request_id, label)] if published is None else []
    if published is not None:
        for line in published.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                pairs.append((str(record["id"]), Path(str(record["path"])).parent.name))
    with Publisher(settings_of(ctx)) as publisher:
        for rid, true in pairs:
            publisher.publish_label(str(rid), str(true))
    if published is not None:
        click.echo(f"sent {len(pairs)} labels")


@click.group()
def dlq() -> None:
    """The dead-letter topic."""


@dlq.command("list")
@click.option("--reason", "reasons", multiple=True, help="Only this dlq-reason (repeatable).")
@click.option("--id", "ids", multiple=True, help="Only this request id (repeatable).")
@click.pass_context
def dlq_list(ctx: click.Context, reasons: tuple[str, ...], ids: tuple[str, ...]) -> None:
    """Print dead letters as JSON lines (reason, error, source, headers; payload by size)."""
    from dlstream.client.dlq import dead_letters

    for stored in dead_letters(settings_of(ctx), reasons=reasons, ids=ids):
        click.echo(json.dumps(stored.summary()))


@dlq.command("replay")
@click.option("--reason", "reasons", multiple=True, help="Only this dlq-reason (repeatable).")
@click.option("--id", "ids", multiple=True, help="Only this request id (repeatable).")
@click.option("--dry-run", is_flag=True, help="List what would be replayed, send nothing.")
@click.pass_context
def dlq_replay(ctx: click.Context, reasons: tuple[str, ...], ids: tuple[str, ...], dry_run: bool) -> None:
    """Send matching dead letters back to their source topics (after fixing what made them fail)."""
    from dlstream.client.dlq import dead_letters, replay
    from dlstream.client.publisher import Publisher

    settings = settings_of(ctx)
    letters = list(dead_letters(settings, reasons=reasons, ids=ids))
    if dry_run:
        for stored in letters:
            click.echo(json.dumps(stored.summary()))
        return
    with Publisher(settings) as publisher:
        count = replay(publisher, letters)
    click.echo(f"replayed {count} dead letters", err=True)
