"""PNGs of a replay (utilization, queue length, misfits and stranded capacity over time) and of a
what-if report (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from slurm_gpu.core.errors import BadInputError

__all__ = ["check_available", "plot_result", "plot_whatif"]


def check_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInputError("--plot needs matplotlib: pip install 'slurm-gpu[plot]'", part="--plot") from None


def _thin(
    t: Sequence[float], ys: Sequence[Sequence[float]], points: int = 4000
) -> Tuple[List[float], List[List[float]]]:
    """At most ``points`` samples (every n-th), so long replays plot fast."""
    step = max(1, len(t) // points)
    return list(t[::step]), [list(y[::step]) for y in ys]


def plot_result(result: Any, path: str, title: str = "") -> None:
    check_available()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    series = result.series
    if series is None or not series.t:
        raise BadInputError("no time series recorded (run with record_series)", part=path)
    t0 = series.t[0]
    hours = [(x - t0) / 3600.0 for x in series.t]
    util = [u / result.total_slices for u in series.used]
    hours, (util, queued, misfits) = _thin(hours, [util, series.queued, series.misfits])
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(10, 9))
    axes[0].plot(hours, util, lw=0.7, label="memory slices")
    samples = getattr(result, "samples", None) or {}
    if samples.get("t"):  # the measurement window's samples: GPC utilization, stranded capacity
        w0 = (result.to_dict().get("window_s") or [0.0])[0]
        at = [(w0 + x) / 3600.0 for x in samples["t"]]
        axes[0].plot(at, samples["compute_utilization"], lw=0.7, label="compute slices (GPCs)")
        axes[3].plot(at, samples["stranded_capacity"], lw=0.7, color="tab:purple")
    axes[0].set_ylabel("utilization")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    axes[1].plot(hours, queued, lw=0.7, color="tab:orange")
    axes[1].set_ylabel("pending jobs")
    axes[2].plot(hours, misfits, lw=0.9, color="tab:red")
    axes[2].set_ylabel("misfits (cumulative)")
    axes[3].set_ylabel("stranded share\nof free GPCs")
    axes[3].set_ylim(0, 1.05)
    axes[3].set_xlabel("hours since first submission")
    summary = (
        f"{result.policy}: utilization {result.utilization:.3f}, mean wait {result.mean_wait_s:.0f} s, "
        f"misfits {result.misfits} ({result.misfit_rate:.2%}), drains {result.drains}"
    )
    fig.suptitle(f"{title}\n{summary}" if title else summary, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save(fig: Any, path: str) -> None:
    import io

    from slurm_gpu.state.fsutil import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue(), mode=0o644)


def plot_whatif(report: Dict[str, Any], outdir: str) -> List[str]:
    """The what-if report's PNGs in ``outdir``: waits by scenario, compute utilization and pending jobs
    over time, capacity freed by right-sizing. Returns the file names written."""
    check_available()
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["scenario"] for r in rows]
    written = []
    # waits: mean and percentiles per scenario (log scale: waits span orders of magnitude)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    stats = ["mean_wait_s", "p50_wait_s", "p95_wait_s", "p99_wait_s"]
    width = 0.8 / len(stats)
    for i, key in enumerate(stats):
        ax.bar([x + i * width for x in range(len(rows))], [max(float(r[key]), 0.1) for r in rows], width,
               label=key.replace("_wait_s", "").replace("_", " "))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))])
    ax.set_xticklabels([f"{r['scenario']}\n{r['label']}" for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("wait (s, log scale)")
    ax.legend(fontsize=8)
    ax.set_title("Job waits by scenario")
    fig.tight_layout()
    _save(fig, os.path.join(outdir, "waits.png"))
    plt.close(fig)
    written.append("waits.png")
    # compute utilization and pending jobs over the window
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    for name in names:
        s = report["samples"].get(name) or {}
        hours = [t / 3600.0 for t in s.get("t", [])]
        axes[0].plot(hours, s.get("compute_utilization", []), lw=0.8, label=name)
        axes[1].plot(hours, s.get("pending", []), lw=0.8, label=name)
    axes[0].set_ylabel("compute-slice\nutilization")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=8, ncol=len(names))
    axes[1].set_ylabel("pending jobs")
    axes[1].set_xlabel("hours into the measurement window")
    fig.tight_layout()
    _save(fig, os.path.join(outdir, "utilization.png"))
    plt.close(fig)
    written.append("utilization.png")
    # capacity freed by right-sizing the whole-GPU jobs
    conv = report["conversion"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = ["compute slices", "memory slices"]
    before = [conv["compute_slice_hours"][0], conv["memory_slice_hours"][0]]
    after = [conv["compute_slice_hours"][1], conv["memory_slice_hours"][1]]
    left.bar([0, 1], before, 0.4, label="whole GPUs, as asked")
    left.bar([0.4, 1.4], after, 0.4, label="right-sized")
    left.set_xticks([0.2, 1.2])
    left.set_xticklabels(labels)
    left.set_ylabel("slice-hours of the whole-GPU jobs")
    left.legend(fontsize=8)
    left.set_title(f"freed: {conv['compute_freed']:.1%} compute, {conv['memory_freed']:.1%} memory",
                   fontsize=9)
    sized = dict(conv.get("rightsized", {}))
    kept = conv["whole_gpu_jobs"] - sum(sized.values())
    right.bar(list(sized) + ["whole GPU"], list(sized.values()) + [kept], color="tab:green")
    right.set_ylabel("whole-GPU jobs")
    right.set_title("what right-sizing gave them", fontsize=9)
    fig.tight_layout()
    _save(fig, os.path.join(outdir, "capacity.png"))
    plt.close(fig)
    written.append("capacity.png")
    return written
