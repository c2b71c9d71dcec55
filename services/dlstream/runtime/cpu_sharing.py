"""Training and model building that share the CPU with other work.

torch's OpenMP threads spin while they wait for the next parallel region. When another busy process has the
cores (a worker, Triton, a second build), the spinning threads take turns with the ones doing the work, and a
training step takes several times as long. ``scripts/omp_wait_policy.py`` measures it.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def share_cores_while_waiting() -> None:
    """Let torch's OpenMP threads sleep instead of spinning while they wait, unless the process already chose
    a policy. It must run before torch is imported (OpenMP reads the policy when it loads); processes started
    from this one inherit it."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
