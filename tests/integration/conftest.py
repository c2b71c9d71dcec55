"""One real local stack per test session, on free ports, and fresh topics and groups per test.

Set ``DLSTREAM_TEST_ATTACH=1`` to use a stack that is already running instead (its addresses are read from the
usual ``DLSTREAM_*`` variables); then nothing is started or stopped here.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.config.settings import Settings, load_settings
from dlstream.models.registry import build_models
from dlstream.runtime.net import free_ports
from dlstream.tools.stack.local_stack import LocalStack

if TYPE_CHECKING:
    from tests.integration.workers import Worker

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    """An unclosed socket's warning fails whichever test collects it; say where it was opened."""
    from tests.socket_origins import trace_socket_origins

    trace_socket_origins()


def stack_settings(run_dir: Path) -> Settings:
    """Settings of a private stack on free ports, with a Redis password so the auth path is exercised."""
    kafka, controller, redis_port, http, grpc, metrics = free_ports(6)
    return load_settings(
        environment="test",
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka}", "partitions": 6},
        redis={"port": redis_port, "password": secrets.token_urlsafe(16)},
        triton={"http_port": http, "grpc_port": grpc, "metrics_port": metrics},
        # Each test starts the workers it needs, on its own topics.
        stack={
            "run_dir": run_dir,
            "kafka_controller_port": controller,
            "kafka_heap": "512m",
            # A Triton restarted by a fault test loads every model again (73 s in a run on a busy machine).
            "start_timeout_s": 300.0,
            "services": ("kafka", "redis", "triton"),
            # pytest's temporary folders are closed to other users; the secure stack's test runs Triton as
            # the service user in a folder of its own.
            "service_user": "",
        },
    )


class StartingStack:
    """The session's stack, started in a thread: early, while the Kubernetes tier runs (it mostly waits for
    its control plane), or by the ``local_stack`` fixture when nothing started it before. ``take`` hands it
    over once up; ``discard`` stops it and, for an early one, removes its folder (outside pytest's)."""

    def __init__(self, run_dir: Path, *, remove_run_dir: bool) -> None:
        self.run_dir = run_dir
        self.remove_run_dir = remove_run_dir
        self.stack = LocalStack(stack_settings(run_dir), project_root=PROJECT_ROOT)
        self.taken = False
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._start, name="session-stack", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            ensure_models_built(PROJECT_ROOT / self.stack.settings.triton.model_repository)
            self.stack.up()
        except Exception as exc:  # noqa: BLE001 - any failure is re-raised by take(), in the test needing it
            self._error = exc

    def take(self) -> LocalStack:
        """The stack once its start ended, to be stopped by the taker; its error if it failed."""
        self.taken = True
        return self.ready()

    def ready(self) -> LocalStack:
        """The stack once its start ended, still stopped at the session's end unless taken; its error if it
        failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stack

    def discard(self) -> None:
        """Stop the stack (and remove its folder if it is not pytest's)."""
        self._thread.join()
        self.stack.down()
        if self.remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


STARTED: list[StartingStack] = []


def start_session_stack_early() -> None:
    """Start the session's stack in the background, once, unless attaching to a running one."""
    if not STARTED and os.environ.get("DLSTREAM_TEST_ATTACH") != "1":
        run_dir = Path(tempfile.mkdtemp(prefix="dlstream-stack-"))
        STARTED.append(StartingStack(run_dir, remove_run_dir=True))


def discard_unused_early_stack() -> None:
    """Stop an early stack that no test took (the integration tests were deselected or never ran)."""
    if STARTED and not STARTED[0].taken:
        STARTED.pop().discard()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The session's running stack (started here, or taken from the early start, unless attaching)."""
    if os.environ.get("DLSTREAM_TEST_ATTACH") == "1":
        yield LocalStack(load_settings(), project_root=PROJECT_ROOT)
        return
    if not STARTED:
        STARTED.append(StartingStack(tmp_path_factory.mktemp("stack"), remove_run_dir=False))
    starting = STARTED[0]
    try:
        stack = starting.take()
        SESSION_STACK.append(stack)
        yield stack
    finally:
        SESSION_STACK.clear()
        starting.discard()


# The session's stack while it runs; what was found broken in it after a failed test or before a test (and
# started again); how many tests ran on it. The summary lists the crashes and their rate.
SESSION_STACK: list[LocalStack] = []
CRASHED: list[str] = []
REVIVED: list[str] = []
ON_STACK: list[str] = []


@pytest.fixture(autouse=True)
def _session_stack_serving(request: pytest.FixtureRequest) -> None:
    """Before a test on the session's stack, start again what crashed, died or stopped answering there
    (Triton's Python backend crashes now and then, see the README's fault section), so one crash fails the
    test it happened in, not every later test; the terminal summary says which service and why."""
    if "local_stack" not in request.fixturenames or os.environ.get("DLSTREAM_TEST_ATTACH") == "1":
        return
    stack: LocalStack = request.getfixturevalue("local_stack")
    ON_STACK.append(request.node.nodeid)
    found = broken_services(stack)
    if not found:
        return
    REVIVED.append(f"before {request.node.nodeid}: {found}")
    stack.up()


def broken_services(stack: LocalStack) -> str:
    """Services of ``stack`` that crashed, died or stopped answering, with their crash lines; "" if none."""
    broken = [s for s in stack.status() if not s.ok]
    return ", ".join(f"{s.name} {s.state} ({s.crash or 'see ' + s.log_path})" for s in broken)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test that failed while a service of the session's stack was down says so, with the crash line: the
    failure is the crash's, not the test's (the next test starts the service again)."""
    report: pytest.TestReport = yield
    if report.failed and report.when == "call" and SESSION_STACK and item.nodeid in ON_STACK[-1:]:
        found = broken_services(SESSION_STACK[0])
        if found:
            CRASHED.append(f"{item.nodeid}: {found}")
            report.sections.append(("session stack crashed during this test", found))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The crashes of the session's stack: the tests they failed, the services started again, the rate."""
    if not ON_STACK:
        return
    write = terminalreporter.write_line
    terminalreporter.section("session stack")
    write(
        f"{len(CRASHED)} test(s) failed by a crashed service and {len(REVIVED)} restart(s) "
        f"in {len(ON_STACK)} tests on the session's stack"
    )
    for line in CRASHED:
        write(f"failed by a crash: {line}")
    for line in REVIVED:
        write(f"started again {line}")


@pytest.fixture(scope="session")
def settings(local_stack: LocalStack) -> Settings:
    """Settings pointing at the session's stack."""
    return local_stack.settings


def ensure_models_built(repo: Path) -> None:
    """Build the models that have no version yet (a fresh clone has none), before Triton starts."""
    build_models(repo, [])


def copy_models(source: Path, names: tuple[str, ...], target: Path) -> Path:
    """``target`` holding version 1 and the configs of the models ``names`` of the repository ``source``:
    a Triton on it loads only what a test needs."""
    for name in names:
        shutil.copytree(
            source / name,
            target / name,
            ignore=lambda folder, found, top=source / name: [
                n for n in found if Path(folder) == top and n not in ("config.pbtxt", "configs", "1")
            ],
        )
    return target


@contextmanager
def partial_stack(
    run_dir: Path, services: tuple[str, ...], models: tuple[str, ...] | None = None
) -> Iterator[Settings]:
    """A stack of only ``services`` on free ports in ``run_dir`` (models built first if Triton is one of
    them; with ``models``, Triton serves a copy of those alone); its settings while it runs."""
    settings = stack_settings(run_dir)
    settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"services": services})})
    if "triton" in services:
        ensure_models_built(PROJECT_ROOT / settings.triton.model_repository)
        if models is not None:
            source = PROJECT_ROOT / settings.triton.model_repository
            repository = copy_models(source, models, run_dir / "repository")
            triton = settings.triton.model_copy(update={"model_repository": repository})
            settings = settings.model_copy(update={"triton": triton})
    stack = LocalStack(settings, project_root=PROJECT_ROOT)
    try:
        stack.up()
        yield stack.settings
    finally:
        stack.down()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:40].strip("-")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: the test's name plus a random suffix."""
    return f"{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"


class TopicFactory:
    """Creates topics for one test and deletes them (and any topic sharing their prefix) afterwards."""

    def __init__(self, admin: KafkaAdmin, prefix: str) -> None:
        self.admin = admin
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, suffix: str, partitions: int = 6) -> str:
        """Create ``<prefix>.<suffix>`` with ``partitions`` partitions and return its name."""
        name = f"{self.prefix}.{suffix}"
        self.admin.ensure_topics([name], partitions=partitions)
        self.created.append(name)
        return name

    def create_all(self, names: list[str], partitions: int = 6) -> None:
        """Create topics already named under this test's prefix (deleted with the others afterwards)."""
        assert all(n.startswith(self.prefix) for n in names), names
        self.admin.ensure_topics(names, partitions=partitions)
        self.created.extend(names)

    def cleanup(self) -> None:
        """Delete this test's topics, including those a client created under the test's prefix."""
        doomed = [t for t in self.admin.list_topics() if t.startswith(self.prefix)]
        self.admin.delete_topics(doomed)


@pytest.fixture
def topics(settings: Settings, unique_name: str) -> Iterator[TopicFactory]:
    """This test's own topics."""
    factory = TopicFactory(KafkaAdmin(settings.kafka), f"test.{unique_name}")
    yield factory
    factory.cleanup()


@pytest.fixture
def group_id(unique_name: str) -> str:
    """This test's own consumer group (topics of Faust apps derive from it too)."""
    return f"test.{unique_name}.group"


@pytest.fixture
def deployed(settings: Settings, topics: TopicFactory, group_id: str) -> Settings:
    """The session's settings with this test's own topics and group for its workers."""
    from tests.integration.workers import deployment_settings

    return deployment_settings(settings, topics, group_id)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers a test starts and appends here; those still running are stopped afterwards."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def empty_triton(settings: Settings, tmp_path: Path) -> Iterator[LocalStack]:
    """A Triton of the test's own over an empty repository."""
    from tests.integration.triton_models import private_triton, running  # it imports this module

    repository = tmp_path / "repository"
    repository.mkdir()
    with running(private_triton(settings, repository, tmp_path / "triton")) as triton:
        yield triton
