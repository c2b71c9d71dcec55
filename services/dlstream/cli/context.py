"""What every command group shares: the settings, the model repository and the modality argument."""

from __future__ import annotations

from pathlib import Path

import click

from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root group loaded."""
    settings: Settings = ctx.obj
    return settings


def repository_of(ctx: click.Context) -> Path:
    """The Triton model repository of the settings, relative to the working folder."""
    return Path.cwd() / settings_of(ctx).triton.model_repository


MODALITY = click.Choice([m.value for m in Modality])
