"""`dlstream stack`: the local stack as child processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dlstream.cli.context import settings_of
from dlstream.tools.stack.local_stack import LocalStack, ServiceStatus


def local_stack(ctx: click.Context, secure: bool = False) -> LocalStack:
    """The local stack of the settings, or the secure one in its own run directory."""
    settings = settings_of(ctx)
    if secure:
        settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"secure": True})})
    return LocalStack(settings, project_root=Path.cwd())


secure_option = click.option(
    "--secure",
    is_flag=True,
    help="The secure stack (in `<run_dir>-secure`); same as DLSTREAM_STACK__SECURE=true.",
)


@click.group()
def stack() -> None:
    """The local stack (Kafka, Redis, Triton) as child processes, no Docker."""


@stack.command("install")
@click.pass_context
def stack_install(ctx: click.Context) -> None:
    """Fetch the Kafka jars and check the binaries the stack needs."""
    local_stack(ctx).install()
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
    local = local_stack(ctx, secure)
    print_status(local.up(), as_json=False)
    if local.security is not None:
        click.echo(
            f"secure stack: clients connect with the settings in {local.security.client_env_path}\n"
            f"  set -a; . {local.security.client_env_path}; set +a\n"
            f"  models add/rollback/remove (Triton's control key) with {local.security.admin_env_path}"
        )


@stack.command("down")
@secure_option
@click.pass_context
def stack_down(ctx: click.Context, secure: bool) -> None:
    """Stop every process this stack started (by recorded pid, never by name)."""
    local_stack(ctx, secure).down()
    click.echo("stack stopped")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@secure_option
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool, secure: bool) -> None:
    """Report each service; exits 1 when one is dead, unhealthy or stopped."""
    statuses = local_stack(ctx, secure).status()
    print_status(statuses, as_json=as_json)
    if not all(s.ok for s in statuses):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", type=click.Choice(["kafka", "redis", "triton", "inference", "drift"]))
@click.option("-n", "--lines", default=50, show_default=True, help="How many of the last lines.")
@secure_option
@click.pass_context
def stack_logs(ctx: click.Context, service: str, lines: int, secure: bool) -> None:
    """Print the last lines of a service's log."""
    for line in local_stack(ctx, secure).log_lines(service, lines):
        click.echo(line)


def print_status(statuses: list[ServiceStatus], as_json: bool) -> None:
    """One line per service, or one JSON object."""
    if as_json:
        payload = {
            s.name: {"state": s.state, "pid": s.pid, "ports": s.ports, "log": s.log_path} for s in statuses
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for s in statuses:
        ports = " ".join(f"{purpose}={host}:{port}" for purpose, (host, port) in s.ports.items())
        click.echo(f"{s.name:<10} {s.state:<10} pid={s.pid or '-':<8} {ports}")
