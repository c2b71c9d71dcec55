"""The latency curve of ``dlstream bench stream --plot``: p50, p99 and p99.9 against offered load."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curve(report: dict[str, Any], path: Path) -> None:
    """Write a PNG of the report's latency curve, with the floor and the idle latency marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    loads = [100 * row["load"] for row in curve]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, label, style in (
        ("p50_ms", "p50", "o-"),
        ("p99_ms", "p99", "s-"),
        ("p99_9_ms", "p99.9", "^--"),
    ):
        ax.plot(loads, [row[key] for row in curve], style, label=label)
    ax.plot(loads, [row["p99_bound_ms"] for row in curve], ":", color="grey", label="p99 bound")
    ax.axhline(report["floor_ms"], color="black", linewidth=1)
    ax.annotate(
        f"floor {report['floor_ms']:g} ms (Kafka round trip + Triton batch 1)",
        (loads[0], report["floor_ms"]),
        textcoords="offset points",
        xytext=(0, 4),
        fontsize=8,
    )
    idle = report["idle"]
    ax.scatter([0], [idle["p50_ms"]], color="tab:green", zorder=3, label=f"idle p50 {idle['p50_ms']:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel(f"offered load, % of the pipeline's maximum ({report['pipeline_eps']:g} ev/s)")
    ax.set_ylabel("end to end, ms (ce_time to subscriber)")
    ax.set_title(f"dlstream latency, model {report['model']}, max batch {report['max_batch']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
