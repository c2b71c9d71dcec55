"""The ``dlstream`` command line: the root group, the command groups (one module each, imported only when
used) and the entry point, which turns project errors into one line."""

from __future__ import annotations

import importlib
import sys

import click

from dlstream.config.settings import load_settings
from dlstream.domain.errors import DlstreamError
from dlstream.runtime.logs import configure_logging

# Where each command lives ("module:attribute"), imported when it runs or is listed: the base install has
# the client commands only, and a command of another role must not break `dlstream publish` or `--help`.
COMMANDS = {
    "publish": "dlstream.cli.client:publish",
    "subscribe": "dlstream.cli.client:subscribe_cmd",
    "label": "dlstream.cli.client:label_cmd",
    "dlq": "dlstream.cli.client:dlq",
    "stack": "dlstream.cli.stack:stack",
    "models": "dlstream.cli.models:models",
    "inference": "dlstream.cli.inference:inference",
    "drift": "dlstream.cli.drift:drift",
    "demo": "dlstream.cli.demo:demo",
    "bench": "dlstream.cli.bench:bench",
    "fuzz": "dlstream.cli.fuzz:fuzz_cmd",
    "config": "dlstream.cli.config:config",
}

# The extra a command group's role installs, named when the group cannot load (``missing_extra``).
COMMAND_EXTRAS = {
    "stack": "stack",
    "models": "models",
    "inference": "worker",
    "drift": "monitor",
    "demo": "stack",
    "bench": "stack",
    "fuzz": "models",
}

# The extra that installs each top-level module a role needs (see pyproject.toml); the base install lacks
# them all.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        ("faust", "mode", "aiokafka", "tritonclient", "numpy", "prometheus_client", "redis"), "worker"
    ),
    **dict.fromkeys(("kubernetes", "matplotlib", "yaml"), "monitor"),
    **dict.fromkeys(
        (
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
        ),
        "models",
    ),
    **dict.fromkeys(("pytriton",), "stack"),
}


def missing_extra(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The message for a command that needs an extra the install lacks (the command's own extra when it is
    named, else the one that installs the missing module), else None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    extra = COMMAND_EXTRAS.get(command or "", extra)
    return f"this command needs the '{extra}' extra (missing module {top}): pip install 'dlstream[{extra}]'"


class _LazyGroup(click.Group):
    """A group whose commands are imported when they are used, not when the program starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            message = missing_extra(exc, cmd_name)
            if message is None:
                raise
            return _unavailable(cmd_name, message)
        return command


def _unavailable(name: str, message: str) -> click.Command:
    """A stand-in for a command whose extra is not installed: listed in the help, and says so when run."""

    def refuse() -> None:
        raise click.ClickException(message)

    return click.Command(
        name,
        callback=refuse,
        help=message,
        short_help="(not installed) " + message.split(": ")[-1],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=_LazyGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """dlstream: streaming inference for deep-learning models on Kafka and Triton."""
    ctx.obj = load_settings()
    configure_logging(ctx.obj.log)


def main() -> None:
    """Console-script entry point: project errors become one line and exit code 2; so does a command that
    needs an extra the install lacks."""
    try:
        cli(standalone_mode=True)
    except DlstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
        message = missing_extra(exc, command)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
