"""Helpers of the monitoring tests: a private Prometheus (own data dir, free port), queries, the dashboard's
queries with Grafana's variables filled in."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana" / "slurm-gpu.json"
RULES = MONITORING / "prometheus" / "slurm-gpu.rules.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - a local test server
        return r.read()


def wait_http(url: str, timeout: float = 30, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url, timeout=2)
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Prometheus:
    """``prometheus`` on 127.0.0.1:<free port>, scraping ``targets`` ({job: [host:port]}) every second."""

    def __init__(self, workdir: str, targets: Dict[str, Sequence[str]], rules: bool = True):
        self.dir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(list(t))}\n"
            "        labels: {cluster: test}\n" for job, t in targets.items())
        rule_line = f"rule_files: [{json.dumps(str(RULES))}]\n" if rules else ""
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n" + rule_line
            + "scrape_configs:\n" + jobs)
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/-/ready", proc=self.proc)

    def query(self, expr: str) -> List[Dict[str, Any]]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        data = json.loads(get(url))
        assert data["status"] == "success", data
        return data["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def dashboard_queries(rate_interval: str = "30s") -> List[Dict[str, str]]:
    """Every panel target's PromQL with the dashboard's variables as Grafana fills them for "All"."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            expr = (target["expr"].replace("$cluster", ".*").replace("$node", ".*")
                    .replace("$__rate_interval", rate_interval))
            out.append({"panel": panel["title"], "ref": target["refId"], "expr": expr})
    return out


def promtool() -> str:
    return shutil.which("promtool") or ""


def have_prometheus() -> bool:
    return bool(shutil.which("prometheus") and promtool()) and os.path.isfile(DASHBOARD)
