"""`dlstream demo`: held-out samples of every modality through the running stack."""

from __future__ import annotations

import click

from dlstream.cli.context import settings_of
from dlstream.domain.errors import DlstreamError


@click.command("demo")
@click.option("--per-modality", default=30, show_default=True, help="Held-out samples sent per modality.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Events per second.")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Give up after this long without a prediction."
)
@click.pass_context
def demo(ctx: click.Context, per_modality: int, rate: float, timeout: float) -> None:
    """Stream held-out samples of every modality through the running stack and show the predictions."""
    from dlstream.tools.demo import run_demo

    settings = settings_of(ctx)
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
