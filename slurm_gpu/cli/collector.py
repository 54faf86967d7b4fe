"""The exporter's collector: reads the node (driver and journal, no node lock), the hooks' log lines and,
now and then, Slurm, and hands ``node.metrics`` families to prometheus_client.

One scrape is one ``read_snapshot`` (the driver keeps its fixed facts between scrapes) plus the lines
appended to ``hooks.log`` and ``history.log`` since the last scrape. The node lock is never taken: journal
records are replaced by atomic renames, so a read sees whole records, and a prolog is never delayed by a
scrape. A view read while a hook changes the node may be a moment old; alerts wait minutes (``for:``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from slurm_gpu.node.hookstats import LogStats
from slurm_gpu.node.metrics import PREFIX, Family, NodeView, node_families, pending_families, profile_names

__all__ = ["NodeCollector", "LogTail", "to_prometheus"]


class LogTail:
    """The complete lines appended to a file since the last call. A rotation (``path`` renamed to
    ``path.1``, a new file started) is followed: the rest of the old file is read first."""

    def __init__(self, path: str):
        self.path = path
        self._inode: Optional[Tuple[int, int]] = None
        self._offset = 0

    def _read(self, path: str, offset: int) -> Tuple[bytes, int]:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next scrape
        return data[:end], offset + end

    def lines(self) -> List[str]:
        out: List[bytes] = []
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        inode = (st.st_dev, st.st_ino)
        if self._inode is not None and inode != self._inode:
            try:
                old = os.stat(self.path + ".1")
                if (old.st_dev, old.st_ino) == self._inode:
                    out.append(self._read(self.path + ".1", self._offset)[0])
            except OSError:
                pass
            self._offset = 0
        elif st.st_size < self._offset:
            self._offset = 0  # truncated in place
        self._inode = inode
        data, self._offset = self._read(self.path, self._offset)
        out.append(data)
        text = b"".join(out).decode("utf-8", "replace")
        return [line for line in text.splitlines() if line.strip()]


def _parsed(lines: Sequence[str]) -> Tuple[List[Dict[str, Any]], int]:
    out, bad = [], 0
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(value, dict):
            out.append(value)
        else:
            bad += 1
    return out, bad


def _user_of(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


class NodeCollector:
    """A prometheus_client collector for one node. ``driver``/``journal``: opened by the caller;
    ``slurm``: a ``SlurmCli`` or None (no Slurm reads); Slurm is asked at most every ``slurm_interval_s``
    (running jobs and the node's features; with ``pending``, the pending jobs' requests as well)."""

    def __init__(self, node: str, driver: Any, journal: Any, catalog: Any, max_count: int, hooks_log: str,
                 slurm: Any = None, slurm_interval_s: float = 60.0, pending: bool = False,
                 hostname: Optional[str] = None, clock: Callable[[], float] = time.time):
        import socket

        self.node, self.driver, self.journal, self.catalog = node, driver, journal, catalog
        self.max_count = max_count
        self.slurm, self.slurm_interval_s, self.pending = slurm, slurm_interval_s, pending
        self.hostname = hostname or socket.gethostname().split(".")[0]
        self.clock = clock
        self.stats = LogStats(node)
        self.hooks_tail = LogTail(hooks_log)
        self.history_tail = LogTail(journal.history_path)
        self.errors: Dict[str, int] = {s: 0 for s in ("driver", "journal", "logs", "slurm")}
        self._profiles: Dict[str, Any] = {}
        self._slurm_at = float("-inf")
        self._slurm: Tuple[Optional[Set[str]], Optional[Sequence[str]], Optional[Sequence[str]]] = (
            None, None, None)
        self._lock = threading.Lock()  # the HTTP server answers scrapes in threads
        self.last_duration_s = 0.0
        self.last_success = 0.0

    def families(self) -> List[Family]:
        """Every family of one scrape, as plain values (``--json`` and the tests read these)."""
        with self._lock:
            t0 = time.monotonic()
            out = self._node() + self._logs()
            out += self._pending()
            ok = not out or out[0].name != PREFIX + "exporter_read_failed"
            if ok:
                self.last_success = self.clock()
            self.last_duration_s = time.monotonic() - t0
            return out + self._self_families()

    def _node(self) -> List[Family]:
        from slurm_gpu.core.errors import DriverError, SlurmGpuError
        from slurm_gpu.node.publish import FeaturePublisher
        from slurm_gpu.node.snapshot import read_snapshot

        try:
            snap = read_snapshot(self.driver, self.journal, self.catalog, True, self._profiles)
        except (DriverError, OSError) as exc:
            return self._failed("driver", exc)
        except SlurmGpuError as exc:
            return self._failed("journal", exc)
        fit = FeaturePublisher(self.slurm, self.max_count, enabled=False).fit_features(snap.state())
        jobs, features, _ = self._slurm_view()
        view = NodeView(self.node, self.hostname, snap, fit, jobs, features, _user_of)
        self._models = snap.models
        return node_families(view)

    def _failed(self, source: str, exc: Exception) -> List[Family]:
        self.errors[source] += 1
        family = Family(PREFIX + "exporter_read_failed", "gauge", "1 when the last scrape could not read "
                        "the node (the error is counted in slurm_gpu_exporter_errors_total).", ("node",))
        family.add((self.node,), 1)
        return [family]

    def _slurm_view(self) -> Tuple[Optional[Set[str]], Optional[Sequence[str]], Optional[Sequence[str]]]:
        from slurm_gpu.core.errors import SlurmGpuError

        if self.slurm is None or self.slurm_interval_s <= 0:
            return None, None, None
        now = time.monotonic()
        if now - self._slurm_at >= self.slurm_interval_s:
            self._slurm_at = now
            try:
                jobs = {str(j) for j in self.slurm.active_jobs_on(self.node)}
                features = self.slurm.node_features(self.node)[1]
                pending = self.slurm.pending_constraints() if self.pending else None
                self._slurm = (jobs, features, pending)
            except (SlurmGpuError, OSError):
                self.errors["slurm"] += 1
                self._slurm = (None, None, None)
        return self._slurm

    def _logs(self) -> List[Family]:
        try:
            hooks, bad_hooks = _parsed(self.hooks_tail.lines())
            history, bad_history = _parsed(self.history_tail.lines())
        except OSError:
            self.errors["logs"] += 1
            return self.stats.families()
        self.stats.unreadable["hooks"] += bad_hooks
        self.stats.unreadable["history"] += bad_history
        for line in hooks:
            self.stats.add_hook_line(line)
        for line in history:
            self.stats.add_history_line(line)
        return self.stats.families()

    def _pending(self) -> List[Family]:
        if not self.pending:
            return []
        constraints = self._slurm_view()[2]
        if constraints is None:
            return []
        return pending_families(constraints, profile_names(getattr(self, "_models", {})))

    def _self_families(self) -> List[Family]:
        from slurm_gpu import __version__

        build = Family(PREFIX + "exporter_build_info", "gauge", "The exporter's version (value 1).",
                       ("node", "version"))
        build.add((self.node, __version__))
        duration = Family(PREFIX + "exporter_scrape_duration_seconds", "gauge",
                          "Time the last scrape took to read the node and the logs.", ("node",))
        duration.add((self.node,), round(self.last_duration_s, 6))
        success = Family(PREFIX + "exporter_last_success_timestamp_seconds", "gauge",
                         "Unix time of the last scrape that read the node (textfile staleness).", ("node",))
        success.add((self.node,), round(self.last_success, 3))
        errors = Family(PREFIX + "exporter_errors", "counter", "Reads that failed, by source.",
                        ("node", "source"))
        for source, n in sorted(self.errors.items()):
            errors.add((self.node, source), n)
        return [build, duration, success, errors]

    def collect(self) -> Iterator[Any]:
        yield from to_prometheus(self.families())


def to_prometheus(families: Sequence[Family]) -> Iterator[Any]:
    """prometheus_client metric families for ``families`` (an info family becomes a gauge ``<name>_info``)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    for f in families:
        labels = list(f.labels)
        if f.kind == "histogram":
            h = HistogramMetricFamily(f.name, f.help, labels=labels)
            for values, hist in f.histograms:
                h.add_metric(list(values), hist.cumulative(), hist.total)
            yield h
            continue
        if f.kind == "counter":
            m: Any = CounterMetricFamily(f.name, f.help, labels=labels)
        else:
            m = GaugeMetricFamily(f.name + ("_info" if f.kind == "info" else ""), f.help, labels=labels)
        for values, value in f.samples:
            m.add_metric(list(values), value)
        yield m
