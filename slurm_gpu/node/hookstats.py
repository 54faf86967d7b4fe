"""Histograms and counters from what the hooks already record: one JSON line per hook run (``hooks.log``,
``hooks.runtime.log_event``) and the requeue/release lines of ``history.log`` (``state.history``).

``LogStats`` is fed parsed lines in order (the exporter reads only what was appended since its last
scrape) and returns metric families (``node.metrics.Family``). No second store: the counts are those of
the lines kept in the files, so a rotated or truncated log shows as a counter reset, which ``rate()`` and
``increase()`` handle. Pure: no I/O.

>>> stats = LogStats("n1")
>>> stats.add_hook_line({"hook": "prolog", "action": "created", "seconds": 0.2,
...                      "nvml": {"timings": [["gpu_instance_create", 0.01]], "errors": []}})
>>> stats.add_history_line({"event": "requeued", "reason": "no placement for 1x7g.80gb on n1"})
>>> stats.runs[("prolog", "created")], stats.requeues[("requeued", "no_placement")]
(1, 1)
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from slurm_gpu.core.vocab import REPLAN_HOOK, HookAction, Repair
from slurm_gpu.node.metrics import PREFIX, Family, Histogram

__all__ = ["LogStats", "HOOK_BUCKETS", "NVML_BUCKETS", "requeue_cause", "NVML_OPERATIONS"]

HOOK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
NVML_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NVML_OPERATIONS = ("gpu_instance_create", "compute_instance_create", "compute_instance_destroy",
                   "gpu_instance_destroy")  # devices.calllog.TIMED_CALLS
JOB_HOOKS = ("prolog", "epilog")
HOOK_ACTIONS = {  # what each hook's lines can say (node.agent.Outcome.action; "error": exited non-zero)
    "prolog": (HookAction.NONE, HookAction.CREATED, HookAction.REFUSED, HookAction.REQUEUED,
               HookAction.CANCELLED, "error"),
    "epilog": (HookAction.NONE, HookAction.RELEASED, HookAction.PARTIAL, "error"),
}
RECONCILE_RESULTS = ("ok", "failed")
REQUEUE_EVENTS = ("requeued", "cancelled")
CAUSES = ("no_placement", "lock_busy", "driver_failure", "driver_refused", "other")
REPAIRS = tuple(str(r) for r in Repair if str(r) not in ("keep", "report"))


def requeue_cause(reason: str) -> str:
    """A bounded label for the free-text reason of a requeue (``node.agent``'s wording)."""
    text = reason or ""
    if text.startswith("no placement for"):
        return "no_placement"  # two jobs raced onto the node within one scheduling pass
    if "node lock" in text:
        return "lock_busy"
    if "GPU or driver failure" in text or "GPU driver failure" in text:
        return "driver_failure"
    if "driver refused" in text:
        return "driver_refused"
    return "other"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


class LogStats:
    """Accumulates one node's hook and history lines."""

    def __init__(self, node: str):
        self.node = node
        hooks = JOB_HOOKS + ("reconcile",)
        self.durations: Dict[str, Histogram] = {h: Histogram(HOOK_BUCKETS) for h in hooks}
        self.nvml: Dict[str, Histogram] = {op: Histogram(NVML_BUCKETS) for op in NVML_OPERATIONS}
        self.runs: Dict[Tuple[str, str], int] = {(h, str(a)): 0 for h, actions in HOOK_ACTIONS.items()
                                                 for a in actions}
        self.runs.update({("reconcile", r): 0 for r in RECONCILE_RESULTS})
        self.problems: Dict[str, int] = {h: 0 for h in JOB_HOOKS + ("reconcile",)}
        self.requeues: Dict[Tuple[str, str], int] = {(e, c): 0 for e in REQUEUE_EVENTS for c in CAUSES}
        self.repairs: Dict[str, int] = {r: 0 for r in REPAIRS}
        self.nvml_errors: Dict[Tuple[str, str], int] = {}
        self.capacity_updates = 0
        self.released_jobs = 0
        self.unreadable: Dict[str, int] = {"hooks": 0, "history": 0}

    def add_hook_line(self, line: Mapping[str, Any]) -> None:
        hook = str(line.get("hook", ""))
        if hook == REPLAN_HOOK:  # the Epilog's work, done after it answered: its problems and updates
            self._add_counts(line, "epilog")
            return
        if hook not in self.durations:
            return
        if hook == "reconcile":
            action = "failed" if line.get("failed") or line.get("error") else "ok"
            for kind, n in dict(line.get("repairs") or {}).items():
                if str(kind) in self.repairs and isinstance(n, int):
                    self.repairs[str(kind)] += n
        else:
            action = "error" if "error" in line else str(line.get("action", "none"))
        self.runs[(hook, action)] = self.runs.get((hook, action), 0) + 1
        seconds = _number(line.get("seconds"))
        if seconds >= 0:
            self.durations[hook].observe(seconds)
        self._add_nvml(line.get("nvml"))
        self._add_counts(line, hook)

    def _add_counts(self, line: Mapping[str, Any], hook: str) -> None:
        problems = line.get("problems")
        if isinstance(problems, list):
            self.problems[hook] += len(problems)
        updates = line.get("capacity_updates")
        if isinstance(updates, int) and updates > 0:
            self.capacity_updates += updates

    def _add_nvml(self, nvml: Any) -> None:
        if not isinstance(nvml, dict):
            return
        for entry in nvml.get("timings") or ():
            if isinstance(entry, list) and len(entry) == 2 and entry[0] in self.nvml:
                seconds = _number(entry[1])
                if seconds >= 0:
                    self.nvml[entry[0]].observe(seconds)
        for entry in nvml.get("errors") or ():
            if isinstance(entry, list) and len(entry) == 2:
                key = (str(entry[0]), str(entry[1]))
                self.nvml_errors[key] = self.nvml_errors.get(key, 0) + 1

    def add_history_line(self, line: Mapping[str, Any]) -> None:
        event = str(line.get("event", ""))
        if event == "released":
            self.released_jobs += 1
        elif event in REQUEUE_EVENTS:
            key = (event, requeue_cause(str(line.get("reason", ""))))
            self.requeues[key] = self.requeues.get(key, 0) + 1

    def families(self) -> List[Family]:
        node = self.node
        hooks = Family(PREFIX + "hook_duration_seconds", "histogram",
                       "Wall time of one Prolog, Epilog or reconcile run (hooks.log).", ("node", "hook"))
        hooks.histograms = [((node, h), hist) for h, hist in sorted(self.durations.items())]
        nvml = Family(PREFIX + "nvml_operation_duration_seconds", "histogram",
                      "Time of one NVML GPU/compute instance create or destroy call made by a hook.",
                      ("node", "operation"))
        nvml.histograms = [((node, op), hist) for op, hist in sorted(self.nvml.items())]
        out = [hooks, nvml]
        out.append(_counter("hook_runs", "Hook runs by outcome (prolog/epilog: the hook's action, 'error' "
                            "when it exited non-zero; reconcile: ok or failed).", ("node", "hook", "action"),
                            {(node,) + k: v for k, v in self.runs.items()}))
        out.append(_counter("hook_problems", "Problems reported by hook runs (a hold that failed, a file "
                            "not written, ...).", ("node", "hook"),
                            {(node, h): v for h, v in self.problems.items()}))
        out.append(_counter("requeues", "Jobs a prolog sent back (requeued) or cancelled, by cause "
                            "(no_placement: jobs raced onto the node).", ("node", "event", "cause"),
                            {(node,) + k: v for k, v in self.requeues.items()}))
        out.append(_counter("reconcile_repairs", "Repairs reconcile made, by kind (destroy_orphan: orphans).",
                            ("node", "kind"), {(node, k): v for k, v in self.repairs.items()}))
        out.append(_counter("nvml_errors", "NVML errors met by the hooks, by call and NVML return code.",
                            ("node", "call", "code"), {(node,) + k: v for k, v in self.nvml_errors.items()}))
        out.append(_counter("capacity_updates", "Times a hook changed the node's fit features in Slurm.",
                            ("node",), {(node,): self.capacity_updates}))
        out.append(_counter("jobs_released", "Jobs whose instances were all released (history.log).",
                            ("node",), {(node,): self.released_jobs}))
        out.append(_counter("log_unreadable_lines", "Lines of hooks.log or history.log that are not JSON "
                            "objects.", ("node", "log"), {(node, k): v for k, v in self.unreadable.items()}))
        return out


def _counter(name: str, help: str, labels: Tuple[str, ...], values: Mapping[Tuple[str, ...], int]) -> Family:
    family = Family(PREFIX + name, "counter", help, labels)
    for key in sorted(values):
        family.add(key, values[key])
    return family
