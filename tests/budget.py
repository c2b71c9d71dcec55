"""The suite's tiers and time budget, as a pytest plugin loaded by ``tests/conftest.py``.

Every test carries exactly one tier marker (``unit``, ``deploy``, ``k8s``, ``integration``); a test without
one fails collection. A test whose own run (pytest's call phase) takes longer than its tier's limit fails
the session unless it is marked ``slow`` with a reason, and the ``slow`` tests together have one budget. The
summary prints each tier's time, the slow set against its budget and the slowest tests.
``--no-budget`` reports without failing (for a debugger, or a machine far slower than CI's).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

TIERS = ("unit", "deploy", "k8s", "integration")
LIMIT_S = {"unit": 1.0, "deploy": 30.0, "k8s": 120.0, "integration": 120.0}
"""Longest call phase of a test not marked ``slow``, per tier."""
SLOW_BUDGET_S = 480.0
"""Longest total call time of the ``slow`` tests together."""
SLOWEST = 25
FILES = 15


@dataclass
class Timing:
    """What the budget knows of one test: its tier, its slow reason (empty when not slow), its phases."""

    tier: str
    slow: str
    phases: dict[str, float] = field(default_factory=dict)
    busy_cpu_s: float = 0.0
    """CPU seconds the whole machine spent while the test ran (every process, the suite's or not)."""

    @property
    def total_s(self) -> float:
        """Setup, call and teardown together."""
        return sum(self.phases.values())


@dataclass
class Budget:
    """The session's timings and what broke the budget."""

    enforce: bool
    tests: dict[str, Timing] = field(default_factory=dict)
    over: list[str] = field(default_factory=list)

    def check(self) -> list[str]:
        """Tests over their tier's limit without a ``slow`` mark, and the slow set over its budget."""
        over = []
        for nodeid, timing in self.tests.items():
            call = timing.phases.get("call", 0.0)
            limit = LIMIT_S[timing.tier]
            if call > limit and not timing.slow:
                over.append(f"{nodeid}: {call:.1f} s, over the {timing.tier} limit of {limit:g} s")
        slow_s = self.slow_total_s()
        if slow_s > SLOW_BUDGET_S:
            over.append(
                f"the slow tests took {slow_s:.0f} s together, over their budget of {SLOW_BUDGET_S:g} s"
            )
        return over

    def slow_total_s(self) -> float:
        """The call time of the ``slow`` tests together."""
        return sum(t.phases.get("call", 0.0) for t in self.tests.values() if t.slow)


BUDGET = pytest.StashKey[Budget]()


def busy_cpu_s() -> float:
    """CPU seconds the machine has spent outside idle and I/O wait since boot (``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--no-budget``: print the budget's summary but do not fail the session on it; ``--timings-json``:
    write every test's phases and the machine's busy CPU seconds to a file."""
    parser.addoption(
        "--no-budget", action="store_true", help="report the time budget without failing the session on it"
    )
    parser.addoption("--timings-json", default=None, help="write every test's timings to this JSON file")


def pytest_configure(config: pytest.Config) -> None:
    """Start the session's budget (the markers are registered in pyproject.toml)."""
    config.stash[BUDGET] = Budget(enforce=not config.getoption("--no-budget"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail collection on a test with no tier, several tiers, or a ``slow`` mark without a reason."""
    budget = config.stash[BUDGET]
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        slow = item.get_closest_marker("slow")
        reason = str(slow.kwargs.get("reason", "")) if slow else ""
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: tier markers {tiers or 'none'}; it needs exactly one of {TIERS}")
        elif slow and not reason:
            wrong.append(f"{item.nodeid}: marked slow without reason=...")
        else:
            budget.tests[item.nodeid] = Timing(tiers[0], reason)
    if wrong:
        raise pytest.UsageError("tests outside the tiers:\n  " + "\n  ".join(wrong))


# The report hook receives no config; the session's budget is reachable from here.
_CURRENT: list[Budget] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Make the session's budget the one the report hook fills."""
    _CURRENT[:] = [session.config.stash[BUDGET]]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Count the machine's busy CPU seconds over the test's setup, call and teardown: a test slow with little
    CPU waits on something; one slow with much CPU does too much work."""
    started = busy_cpu_s()
    yield
    if _CURRENT and item.nodeid in _CURRENT[0].tests:
        _CURRENT[0].tests[item.nodeid].busy_cpu_s = busy_cpu_s() - started


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record the duration of each phase of each test."""
    if _CURRENT and report.nodeid in _CURRENT[0].tests:
        _CURRENT[0].tests[report.nodeid].phases[report.when] = report.duration


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail an otherwise green session whose tests broke the budget."""
    budget = session.config.stash[BUDGET]
    budget.over = budget.check()
    path = session.config.getoption("--timings-json")
    if path:
        ran = {nodeid: asdict(t) for nodeid, t in budget.tests.items() if t.phases}
        Path(path).write_text(json.dumps(ran, indent=1))
    if budget.over and budget.enforce and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Each tier's time, the slow set against its budget, the slowest phases and what broke the budget."""
    budget = config.stash[BUDGET]
    ran = {nodeid: t for nodeid, t in budget.tests.items() if t.phases}
    if not ran:
        return
    write = terminalreporter.write_line
    terminalreporter.section("time budget")
    by_tier: dict[str, list[Timing]] = defaultdict(list)
    for timing in ran.values():
        by_tier[timing.tier].append(timing)
    for tier in TIERS:
        if tier in by_tier:
            seconds = sum(t.total_s for t in by_tier[tier])
            write(
                f"{tier:<12} {len(by_tier[tier]):>4} tests {seconds:>8.1f} s"
                f"   (a test's call phase may take {LIMIT_S[tier]:g} s unless marked slow)"
            )
    slow = [t for t in ran.values() if t.slow]
    write(f"{'slow':<12} {len(slow):>4} tests {budget.slow_total_s():>8.1f} s   (budget {SLOW_BUDGET_S:g} s)")
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for nodeid, timing in ran.items():
        totals = files[nodeid.split("::")[0]]
        totals[0] += timing.total_s
        totals[1] += timing.busy_cpu_s
    write(
        f"{FILES} slowest files (setup, call and teardown of their tests; the machine's busy CPU seconds "
        "meanwhile, whatever ran):"
    )
    for path, (seconds, cpu) in sorted(files.items(), key=lambda f: f[1][0], reverse=True)[:FILES]:
        write(f"{seconds:>8.1f}s {cpu:>7.1f} cpu-s {path}")
    write(f"{SLOWEST} slowest phases:")
    phases = [(s, when, nodeid, t) for nodeid, t in ran.items() for when, s in t.phases.items()]
    for seconds, when, nodeid, timing in sorted(phases, key=lambda p: p[0], reverse=True)[:SLOWEST]:
        mark = " slow" if timing.slow else ""
        write(f"{seconds:>8.2f}s {when:<8} {timing.tier}{mark} {nodeid}")
    if budget.over:
        verdict = "FAILS the session" if budget.enforce else "reported only (--no-budget)"
        terminalreporter.section(f"over the time budget: {verdict}", red=True)
        for line in budget.over:
            write(line, red=True)
