"""`dlstream config`: the settings in effect, and their reference."""

from __future__ import annotations

import click

from dlstream.cli.context import settings_of
from dlstream.config.docs import markdown_table


@click.group()
def config() -> None:
    """Inspect the settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """The effective settings as JSON (secrets masked)."""
    click.echo(settings_of(ctx).model_dump_json(indent=2))


@config.command("docs")
def config_docs() -> None:
    """The configuration table of the README (Markdown)."""
    click.echo(markdown_table())
