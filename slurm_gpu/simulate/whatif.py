"""What dynamic MIG would have done for a site's own history (``slurm-gpu whatif``).

One sacct export, converted with right-sizing (``slurm_gpu.simulate.sacct``), replayed five times on the
same cluster with the same instance-time model, each admission with the scheduler settings that ship
for it:

- ``current``: the jobs as they asked, on the site's practice: whole GPUs (every GPU one full-size
  instance, i.e. no MIG), or the site's static layout (``current_layout``);
- ``static``: the right-sized jobs on the best static MIG layout for their mix;
- ``default``: the right-sized jobs under slurm-gpu's default admission (counts) and placement;
- ``features``: the same under the earlier feature admission, one start per scheduling pass;
- ``ideal``: the right-sized jobs with fluid slices, the bound geometry allows.

The report holds one row per scenario (waits, utilizations, stranded capacity, fragmentation), the
conversion's account of what right-sizing freed, and the samples the plots draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from slurm_gpu.simulate.cluster import ClusterSpec
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.metrics import Result
from slurm_gpu.simulate.policies import make_policy
from slurm_gpu.simulate.sacct import Converted
from slurm_gpu.simulate.traces import TraceJob

__all__ = ["Scenario", "scenarios", "run_whatif", "ROW_KEYS"]

ROW_KEYS = (
    "scenario", "policy", "requests", "jobs", "started", "rejected", "mean_wait_s", "p50_wait_s",
    "p95_wait_s", "p99_wait_s", "compute_utilization", "memory_utilization", "stranded_capacity",
    "fragmentation", "request_fragmented", "last_start_s",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    policy: str
    rightsized: bool
    layout: Optional[str] = None
    label: str = ""


def scenarios(full_profile: str, current_layout: Optional[str]) -> List[Scenario]:
    """``full_profile``: the whole-GPU layout (``full``: each model's full-size profile)."""
    current = Scenario("current", "static", False, current_layout or full_profile,
                       "site layout" if current_layout else "whole GPUs")
    return [
        current,
        Scenario("static", "static", True, None, "best static MIG layout"),
        Scenario("default", "default", True, None, "slurm-gpu default (counts)"),
        Scenario("features", "features", True, None, "fit features, 1 start/pass"),
        Scenario("ideal", "ideal", True, None, "fluid slices (bound)"),
    ]


def _row(scenario: Scenario, result: Result) -> Dict[str, Any]:
    d = result.to_dict()
    row = {k: d.get(k) for k in ROW_KEYS}
    row.update({"scenario": scenario.name, "policy": scenario.policy,
                "requests": "right-sized" if scenario.rightsized else "as asked", "label": scenario.label})
    if d.get("static_layout"):
        row["static_layout"] = d["static_layout"]
    if d.get("rejected_reasons"):
        row["rejected_reasons"] = d["rejected_reasons"]
    return row


def run_whatif(
    converted: Converted,
    cluster: ClusterSpec,
    make_config: Callable[[], SimConfig],
    current_layout: Optional[str] = None,
    progress: Optional[Callable[[str], Optional[Callable[[int, int], None]]]] = None,
) -> Dict[str, Any]:
    """Replay every scenario; the report (``rows``, ``conversion``, ``samples``, ``waits``)."""
    if not converted.jobs:
        from slurm_gpu.core.errors import BadInputError

        raise BadInputError("the sacct file has no job that ran on a GPU", part="sacct")
    rows: List[Dict[str, Any]] = []
    samples: Dict[str, Dict[str, List[float]]] = {}
    waits: Dict[str, Sequence[float]] = {}
    for sc in scenarios("full", current_layout):
        trace: List[TraceJob] = converted.jobs if sc.rightsized else converted.original
        config = make_config()
        config.progress = progress(sc.name) if progress else None
        sim = Simulation(trace, cluster, make_policy(sc.policy, layout=sc.layout), config)
        result = sim.run()
        rows.append(_row(sc, result))
        samples[sc.name] = result.samples
        waits[sc.name] = list(result.waits)
    report = converted.report.to_dict()
    current, default = rows[0], next(r for r in rows if r["scenario"] == "default")
    return {
        "cluster": cluster.text,
        "rows": rows,
        "conversion": report,
        "summary": {
            "mean_wait_default_vs_current": _ratio(default["mean_wait_s"], current["mean_wait_s"]),
            "p95_wait_default_vs_current": _ratio(default["p95_wait_s"], current["p95_wait_s"]),
            "compute_freed": report["compute_freed"],
            "memory_freed": report["memory_freed"],
            "rightsized_jobs": report["rightsized_jobs"],
            "whole_gpu_jobs": report["whole_gpu_jobs"],
        },
        "samples": samples,
        "waits": waits,
    }


def _ratio(a: Any, b: Any) -> Optional[float]:
    try:
        return round(float(a) / float(b), 4) if float(b) > 0 else None
    except (TypeError, ValueError):
        return None


TABLE_COLUMNS = (
    ("scenario", "scenario"), ("label", "practice"), ("requests", "requests"), ("started", "started"),
    ("rejected", "rejected"), ("mean_wait_s", "mean wait s"), ("p50_wait_s", "P50"), ("p95_wait_s", "P95"),
    ("p99_wait_s", "P99"), ("compute_utilization", "GPC util"), ("memory_utilization", "mem util"),
    ("stranded_capacity", "stranded"), ("fragmentation", "frag"), ("request_fragmented", "req-frag"),
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def table_lines(report: Dict[str, Any]) -> List[str]:
    """The comparison as a Markdown table, one row per scenario."""
    out = ["| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
           "|" + "|".join("---" if i < 3 else "---:" for i in range(len(TABLE_COLUMNS))) + "|"]
    for row in report["rows"]:
        out.append("| " + " | ".join(_cell(row.get(key)) for key, _ in TABLE_COLUMNS) + " |")
    return out


def markdown(report: Dict[str, Any], pictures: Sequence[str]) -> str:
    """The short report: the table, what right-sizing freed, what was left out, the plots."""
    conv, summary = report["conversion"], report["summary"]
    lines = [f"# What-if on {report.get('source', 'the sacct history')} ({report['cluster']})", ""]
    lines += table_lines(report)
    lines += [
        "",
        f"- Jobs replayed: {conv['jobs']} of {conv['rows']} sacct rows "
        f"(skipped: {', '.join(f'{n} {why}' for why, n in conv['skipped'].items()) or 'none'}).",
        f"- Right-sized: {conv['rightsized_jobs']} of {conv['whole_gpu_jobs']} whole-GPU jobs "
        f"({', '.join(f'{n} x {p}' for p, n in conv['rightsized'].items()) or 'none'}); kept whole: "
        f"{', '.join(f'{n} ({why})' for why, n in conv['not_rightsized'].items()) or 'none'}.",
        f"- Capacity freed by right-sizing: {conv['compute_freed']:.1%} of the whole-GPU jobs' compute-slice"
        f" hours, {conv['memory_freed']:.1%} of their memory-slice hours ({conv['whole_gpu_hours']:,.0f}"
        " GPU-hours as they ran).",
    ]
    ratio = summary.get("mean_wait_default_vs_current")
    if ratio is not None:
        lines.append(f"- slurm-gpu default vs current practice: mean wait x{ratio}, P95 x"
                     f"{summary.get('p95_wait_default_vs_current')}.")
    for row in report["rows"]:
        if row.get("rejected"):
            reasons = "; ".join(f"{n} x {why}" for why, n in row.get("rejected_reasons", {}).items())
            lines.append(f"- {row['scenario']} could not run {row['rejected']} jobs: {reasons}.")
    lines += ["", "Run times are kept as recorded: right-sized jobs are assumed to run as fast on their "
              "instance (an upper bound of the gain for compute-bound jobs).", ""]
    lines += [f"![{p}]({p})" for p in pictures]
    return "\n".join(lines) + "\n"
