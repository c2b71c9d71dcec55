"""Seconds per training step of the digits network, with torch's OpenMP threads spinning (the default) or
sleeping (``OMP_WAIT_POLICY=PASSIVE``) while they wait, alone and beside a second training process.

    .venv/bin/python scripts/omp_wait_policy.py [--steps 15] [--rounds 2]

Prints one JSON object: seconds per step for each policy and condition, and the ratios default / passive.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from dlstream.runtime.cpu_sharing import WAIT_POLICY

ROOT = Path(__file__).resolve().parents[1]

STEPS = """
import sys, time, torch
from dlstream.models.zoo.digits import network
torch.manual_seed(0)
net = network(10)
optimiser = torch.optim.AdamW(net.parameters())
loss_fn = torch.nn.CrossEntropyLoss()
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    logits, _ = net(x)
    loss = loss_fn(logits, y)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
step()
steps = int(sys.argv[1])
if steps == 0:
    while True:
        step()
started = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - started) / steps)
"""


def _environment(policy: str) -> dict[str, str]:
    """This process's environment with ``policy`` as the wait policy ("default": none set, OpenMP's own)."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    if policy != "default":
        env[WAIT_POLICY] = policy
    return env


def seconds_per_step(policy: str, steps: int) -> float:
    """Seconds per training step of a fresh process under ``policy`` ("default" or an OpenMP policy)."""
    out = subprocess.run(
        [sys.executable, "-c", STEPS, str(steps)],
        cwd=ROOT,
        env=_environment(policy),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure both policies alone and beside a competing training process, alternating, and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"alone": {}, "beside_a_training": {}}
    for condition in results:
        competitor = None
        if condition == "beside_a_training":
            competitor = subprocess.Popen(
                [sys.executable, "-c", STEPS, "0"], cwd=ROOT, env=_environment("default")
            )
        try:
            for _ in range(args.rounds):
                for policy in ("default", "PASSIVE"):
                    results[condition].setdefault(policy, []).append(seconds_per_step(policy, args.steps))
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    report = {
        condition: {
            "seconds_per_step": {p: [round(v, 4) for v in values] for p, values in runs.items()},
            "default_over_passive": round(
                statistics.median(runs["default"]) / statistics.median(runs["PASSIVE"]), 2
            ),
        }
        for condition, runs in results.items()
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
