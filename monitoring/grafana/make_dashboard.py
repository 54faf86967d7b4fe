"""Writes slurm-gpu.json, the Grafana dashboard (python3 make_dashboard.py). Panels and their queries are
described in docs/monitoring.md; tests/monitoring/ evaluates every query against a real Prometheus."""

import json
import os

C = 'cluster=~"$cluster"'
N = 'cluster=~"$cluster",node=~"$node"'

# (row, title, type, description, [(expr, legend)], options)
PANELS = [
    ("Cluster", "Capacity per profile", "timeseries",
     "How many more instances of each profile alone fit, summed over nodes (what Slurm was told).",
     [(f"sum by (profile) (slurm_gpu_profile_published_instances{{{C}}})", "{{profile}}")], {}),
    ("Cluster", "Slice utilization", "stat",
     "Share of MIG memory slices held by instances or journalled claims.",
     [(f"1 - sum(slurm_gpu_gpu_free_slices{{{C}}}) / sum(slurm_gpu_gpu_memory_slices{{{C}}})", "used")],
     {"unit": "percentunit"}),
    ("Cluster", "Instances by profile", "timeseries", "MIG instances the drivers hold, by profile.",
     [(f"sum by (GPU_I_PROFILE) (slurm_gpu_mig_instances{{{C}}})", "{{GPU_I_PROFILE}}")], {}),
    ("Cluster", "Fragmentation", "timeseries",
     "Stranded slices (free but unusable by any profile) per node, and the mean fragmentation ratio.",
     [(f"sum by (node) (slurm_gpu_gpu_stranded_slices{{{C}}})", "stranded {{node}}"),
      (f"avg by (node) (slurm_gpu_gpu_fragmentation_ratio{{{C}}})", "ratio {{node}}")], {}),
    ("Cluster", "Pending demand by profile", "timeseries",
     "Instances pending jobs ask for, by profile (the exporter run with --pending).",
     [(f"sum by (profile) (slurm_gpu_pending_instances{{{C}}})", "{{profile}}")], {}),
    ("Cluster", "Requeued and cancelled jobs", "timeseries",
     "Jobs a prolog sent back, by cause; no_placement means jobs raced onto a node.",
     [(f"sum by (cause) (increase(slurm_gpu_requeues_total{{{C}}}[$__rate_interval]))", "{{cause}}")], {}),
    ("Node", "GPU layout over time", "timeseries",
     "Instances per GPU and profile on the selected nodes: the layout as it changes.",
     [(f"sum by (node, gpu, GPU_I_PROFILE) (slurm_gpu_mig_instances{{{N}}})",
       "{{node}} GPU {{gpu}} {{GPU_I_PROFILE}}")], {}),
    ("Node", "Free and largest placeable slices per GPU", "timeseries",
     "Free memory slices and the size of the largest profile that still fits, per GPU.",
     [(f"slurm_gpu_gpu_free_slices{{{N}}}", "free {{node}}/{{gpu}}"),
      (f"slurm_gpu_gpu_largest_placeable_slices{{{N}}}", "largest {{node}}/{{gpu}}")], {}),
    ("Node", "Instances with jobs", "table",
     "Every MIG instance with its dcgm-exporter join labels and the job and user owning it.",
     [(f"slurm_gpu_mig_instance{{{N}}} * on (node, gpu, GPU_I_ID, mig_uuid) group_left (job_id, user, phase) "
       f"slurm_gpu_mig_instance_job_info{{{N}}}", "")], {"instant": True}),
    ("Node", "Instances without a running job", "timeseries",
     "Instances no running job owns (leaks once they last; reconcile reaps them).",
     [(f"sum by (node) (slurm_gpu_mig_instance_unowned{{{N}}})", "{{node}}")], {}),
    ("Node", "MIG mode", "stat", "GPUs not in MIG mode (0 is the normal state).",
     [(f"count(slurm_gpu_gpu_mig_mode{{{N}}} == 0) or vector(0)", "GPUs with MIG off")], {}),
    ("Hooks", "Prolog and epilog duration (p50, p95)", "timeseries",
     "Quantiles of hook wall time from the hooks' log lines.",
     [(f"histogram_quantile(0.95, sum by (hook, le) (rate(slurm_gpu_hook_duration_seconds_bucket{{{N}}}"
       "[$__rate_interval])))", "p95 {{hook}}"),
      (f"histogram_quantile(0.5, sum by (hook, le) (rate(slurm_gpu_hook_duration_seconds_bucket{{{N}}}"
       "[$__rate_interval])))", "p50 {{hook}}")], {"unit": "s"}),
    ("Hooks", "NVML create and destroy time (p95)", "timeseries",
     "GPU and compute instance create/destroy calls made by the hooks.",
     [(f"histogram_quantile(0.95, sum by (operation, le) (rate("
       f"slurm_gpu_nvml_operation_duration_seconds_bucket{{{N}}}[$__rate_interval])))", "{{operation}}")],
     {"unit": "s"}),
    ("Hooks", "Hook outcomes", "timeseries", "Hook runs by hook and outcome.",
     [(f"sum by (hook, action) (increase(slurm_gpu_hook_runs_total{{{N}}}[$__rate_interval]))",
       "{{hook}} {{action}}")], {}),
    ("Hooks", "Errors and repairs", "timeseries",
     "NVML errors by call, reconcile repairs by kind, journal problems.",
     [(f"sum by (call) (increase(slurm_gpu_nvml_errors_total{{{N}}}[1h])) or vector(0)", "NVML {{call}}"),
      (f"sum by (kind) (increase(slurm_gpu_reconcile_repairs_total{{{N}}}[1h]))", "repair {{kind}}"),
      (f"sum(slurm_gpu_journal_problems{{{N}}})", "journal problems")], {}),
    ("Hooks", "Exporter scrape time", "timeseries", "Time the exporter took to read the node.",
     [(f"slurm_gpu_exporter_scrape_duration_seconds{{{N}}}", "{{node}}")], {"unit": "s"}),
]


def build():
    panels, y, pid, row = [], 0, 1, None
    x = 0
    for row_name, title, kind, description, targets, opts in PANELS:
        if row_name != row:
            if x:
                y += 8
            panels.append({"id": pid, "type": "row", "title": row_name, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            pid, y, x, row = pid + 1, y + 1, 0, row_name
        width = 24 if kind == "table" else 12
        if x + width > 24:
            x, y = 0, y + 8
        panel = {
            "id": pid, "type": kind, "title": title, "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": width, "x": x, "y": y},
            "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"},
                         **({"instant": True, "format": "table"} if opts.get("instant") else {})}
                        for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": opts.get("unit", "short")}, "overrides": []},
            "options": {},
        }
        panels.append(panel)
        pid += 1
        x += width
        if x >= 24:
            x, y = 0, y + 8

    def var(name, label, query, multi=True):
        return {"name": name, "label": label, "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
                "multi": multi, "includeAll": True, "allValue": ".*",
                "current": {"text": "All", "value": "$__all"}, "sort": 1}

    return {
        "title": "slurm-gpu: dynamic MIG", "uid": "slurm-gpu-mig", "schemaVersion": 39, "version": 1,
        "tags": ["slurm", "mig", "gpu"], "timezone": "browser", "editable": True,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            var("cluster", "Cluster", "label_values(slurm_gpu_gpu_info, cluster)"),
            var("node", "Node", 'label_values(slurm_gpu_gpu_info{cluster=~"$cluster"}, node)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm-gpu.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(build(), f, indent=2)
        f.write("\n")
