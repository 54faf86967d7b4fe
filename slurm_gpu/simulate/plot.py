"""PNG of a replay: utilization, queue length and misfits over time (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from slurm_gpu.core.errors import BadInputError

__all__ = ["check_available", "plot_result"]


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
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(10, 7))
    axes[0].plot(hours, util, lw=0.7)
    axes[0].set_ylabel("utilization\n(memory slices)")
    axes[0].set_ylim(0, 1.05)
    axes[1].plot(hours, queued, lw=0.7, color="tab:orange")
    axes[1].set_ylabel("pending jobs")
    axes[2].plot(hours, misfits, lw=0.9, color="tab:red")
    axes[2].set_ylabel("misfits (cumulative)")
    axes[2].set_xlabel("hours since first submission")
    summary = (
        f"{result.policy}: utilization {result.utilization:.3f}, mean wait {result.mean_wait_s:.0f} s, "
        f"misfits {result.misfits} ({result.misfit_rate:.2%}), drains {result.drains}"
    )
    fig.suptitle(f"{title}\n{summary}" if title else summary, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
