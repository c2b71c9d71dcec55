"""Suite-wide hooks: the tiers and the time budget (``tests/budget.py``), and the early start of the
integration tier's session stack."""

import sys

import pytest

from dlstream.runtime.cpu_sharing import share_cores_while_waiting
from tests.budget import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_protocol,
    pytest_sessionstart,
    pytest_terminal_summary,
)
from tests.budget import pytest_sessionfinish as budget_sessionfinish

# Before any test imports torch: the tests' own training and in-process models then leave the cores to the
# stack's processes (and to whatever shares the machine) while their OpenMP threads wait, as builds do.
share_cores_while_waiting()

# Whether a collected test needs the integration tier's session stack.
NEEDS_STACK: list[bool] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note whether the session will need the integration tier's stack."""
    NEEDS_STACK[:] = [any("local_stack" in getattr(item, "fixturenames", ()) for item in session.items)]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """When the Kubernetes tier begins and integration tests follow, start their stack in the background."""
    if NEEDS_STACK and NEEDS_STACK[0] and item.get_closest_marker("k8s") is not None:
        from tests.integration.conftest import start_session_stack_early

        start_session_stack_early()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop an early-started stack that no test took; then the budget's verdict."""
    integration = sys.modules.get("tests.integration.conftest")
    if integration is not None:
        integration.discard_unused_early_stack()
    budget_sessionfinish(session, exitstatus)


__all__ = [
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_logreport",
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
]
