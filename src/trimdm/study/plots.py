"""The plots the design-space studies share (PNG, matplotlib's Agg backend: no display needed).

Owns: bar panels of a measure per arm with seed intervals, line panels of y against x per group (log
axes optional) with fitted curves. Does not own what is plotted (each study) or its numbers.
"""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_panels(path: Path, panels: dict[str, dict[str, dict]], ylabel: str) -> Path:
    """One panel per key of `panels`, one bar per arm: {"mean", "low", "high"} (low/high None: no bar)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, arms) in zip(axes[0], panels.items()):
        names = list(arms)
        means = [arms[a]["mean"] for a in names]
        err = [[m - (arms[a]["low"] if arms[a]["low"] is not None else m) for a, m in zip(names, means)],
               [(arms[a]["high"] if arms[a]["high"] is not None else m) - m for a, m in zip(names, means)]]
        ax.bar(range(len(names)), means, yerr=err, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        lo, hi = min(means), max(means)
        pad = (hi - lo) * 0.5 + 1e-3 * max(abs(hi), 1)
        ax.set_ylim(lo - pad - max(err[0] + [0]), hi + pad + max(err[1] + [0]))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_panels(path: Path, panels: dict[str, dict[str, tuple]], xlabel: str, ylabel: str, logx: bool = False,
                logy: bool = False, fits: dict[str, dict[str, tuple]] | None = None, joined: bool = True) -> Path:
    """One panel per key; per group (x values, y values) as points (joined by lines unless `joined` is
    False: points that are no sequence), and, where `fits` has the same panel and group, a dashed fitted
    curve (x, y). The y axis spans the points (a fitted curve that runs far off them is clipped)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, groups) in zip(axes[0], panels.items()):
        colors = plt.cm.viridis([i / max(1, len(groups) - 1) for i in range(len(groups))])
        ys = [v for _, y in groups.values() for v in y]
        for color, (label, (x, y)) in zip(colors, groups.items()):
            ax.plot(x, y, "o-" if joined else "o", color=color, label=label, ms=4)
            curve = (fits or {}).get(title, {}).get(label)
            if curve is not None:
                ax.plot(curve[0], curve[1], "--", color=color, alpha=0.8)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        if fits and ys:
            lo, hi = min(ys), max(ys)
            pad = 0.25 * (hi - lo) + 1e-3 * max(abs(hi), 1e-12)
            ax.set_ylim(lo / 1.3 if logy else lo - pad, hi * 1.3 if logy else hi + pad)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
