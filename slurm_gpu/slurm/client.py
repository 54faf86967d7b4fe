"""The Slurm adapter over the Slurm command-line tools (works on 22.05 to 26.05, needs no pyslurm).

Hooks run with no PATH, so the tools are called by absolute path (``bin_dir``). Every call has a timeout
and raises ``SlurmError`` carrying the command and Slurm's message when it fails.

What was measured on 22.05 (tests/cluster/test_integration_hooks.py re-checks it on the real cluster):
- ``scontrol requeue`` works from inside a Prolog (PrologFlags=Alloc): the job goes back to PENDING, the
  node stays in service, the Epilog runs. A requeued job is held back ~120 s, and must be: a job restarted
  sooner on the same node gets no Prolog (slurmd still caches its credential). A ``--no-requeue`` job
  refuses ("presently disabled") until ``Requeue=1`` is set on it.
- ``squeue --json`` ignores ``-w`` and ``-j`` in 22.05 and lists every job, so jobs on a node are read
  with a ``--format`` listing of Slurm-owned fields (id, state) instead.

A job's request and allocation are read only as structured data: ``scontrol show job --json`` where the
version has it (23.02+), else ``squeue --json`` filtered by job id. The text of ``scontrol show job`` is
never used for a decision: user-controlled fields (JobName, Comment, WorkDir, StdOut...) share its lines
with Slurm's own, so a job name can forge any field (docs/security.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import SlurmError
from slurm_gpu.slurm.parse import (
    ACTIVE_STATES,
    AWAIT_MARK,
    JOB_ID,
    SQUEUE_JOB_FORMAT,
    SQUEUE_PENDING_FORMAT,
    GresCount,
    JobInfo,
    NodeGres,
    PendingJob,
    format_gres_count,
    job_by_id,
    job_from_squeue_line,
    parse_gres_counts,
    parse_job_state,
    pending_from_squeue,
)

__all__ = ["SlurmCli", "REQUEUE_MARK", "REFUSE_MARK"]

# Markers appended to a job's admin comment so that `scontrol show job` tells users and admins why.
REQUEUE_MARK = "slurm-gpu-requeued"
REFUSE_MARK = "slurm-gpu-refused"
# `scontrol show job --json` exists from 23.02 (measured: absent in 22.05.8).
JSON_SCONTROL_SINCE = (23, 2)
# From 24.11 the JSON is asked for in one data_parser version: 24.11 ships v0.0.40-v0.0.42, 26.05 ships
# v0.0.42-v0.0.45, so v0.0.42 is the one both print (measured on 24.11.5 and 26.05.5; gone in 26.11).
JSON_PINNED_SINCE = (24, 11)
JSON_PINNED = "--json=v0.0.42"


class SlurmCli:
    """Reads jobs and updates nodes/jobs through ``scontrol`` and ``squeue``."""

    def __init__(self, bin_dir: str = "/usr/bin", timeout_s: float = 15.0,
                 env: Optional[Mapping[str, str]] = None, version_cache: Optional[str] = None):
        """``version_cache``: a file that keeps ``scontrol --version``'s answer for the next process (a
        hook is a new process for every job), valid while the ``scontrol`` file is the same one."""
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s
        self._env = dict(env) if env is not None else None
        self._version: Optional[Tuple[int, int]] = None
        self._version_cache = version_cache
        self._started_jobs: Dict[int, Callable[[], JobInfo]] = {}  # start_job's reads, for job()

    # -- plumbing -------------------------------------------------------------------------------------
    def _run(self, tool: str, args: Sequence[str]) -> str:
        return self._start(tool, args)()

    def _start(self, tool: str, args: Sequence[str]) -> Callable[[], str]:
        """Start ``tool args``; the returned function waits for it and gives its output (SlurmError when
        it cannot start, times out or fails). Called exactly once: until then the tool runs alongside."""
        cmd = [os.path.join(self.bin_dir, tool), *args]
        env = self._env if self._env is not None else _minimal_env()
        started = time.monotonic()
        try:
            # Job names and paths may hold any bytes: undecodable ones must not fail a hook.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                    env=env)
        except OSError as exc:
            raise SlurmError(f"{' '.join(cmd)}: {exc}") from exc

        def result() -> str:
            try:
                out, err = proc.communicate(timeout=max(self.timeout_s - (time.monotonic() - started), 0.0))
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.communicate()
                raise SlurmError(f"{' '.join(cmd)}: {exc}") from exc
            if proc.returncode != 0:
                raise SlurmError(f"{' '.join(cmd)} exited {proc.returncode}: {(err or out).strip()}")
            return out

        return result

    # -- reads ----------------------------------------------------------------------------------------
    def version(self) -> Tuple[int, int]:
        """Slurm's ``(major, minor)`` from ``scontrol --version`` (no controller round trip); cached."""
        if self._version is None:
            identity = self._scontrol_identity()
            self._version = self._cached_version(identity)
            if self._version is None:
                out = self._run("scontrol", ["--version"])
                m = re.search(r"(\d+)\.(\d+)", out)
                if not m:
                    raise SlurmError(f"cannot read a Slurm version from {out.strip()!r}")
                self._version = (int(m.group(1)), int(m.group(2)))
                self._keep_version(identity, self._version)
        return self._version

    def _scontrol_identity(self) -> Optional[str]:
        """Which ``scontrol`` file answers (resolved path, inode, size, times): an upgrade replaces or
        rewrites it, and then the cached version no longer applies."""
        path = os.path.realpath(os.path.join(self.bin_dir, "scontrol"))
        try:
            st = os.stat(path)
        except OSError:
            return None  # the call itself will say what is wrong
        return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def _cached_version(self, identity: Optional[str]) -> Optional[Tuple[int, int]]:
        if self._version_cache is None or identity is None:
            return None
        try:
            with open(self._version_cache, encoding="utf-8") as f:
                kept = json.load(f)
            major, minor = kept["version"]
            if kept["scontrol"] == identity and isinstance(major, int) and isinstance(minor, int):
                return (major, minor)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: ask scontrol
        return None

    def _keep_version(self, identity: Optional[str], version: Tuple[int, int]) -> None:
        if self._version_cache is None or identity is None:
            return
        from slurm_gpu.core.errors import StateError
        from slurm_gpu.state.fsutil import atomic_write

        try:
            atomic_write(self._version_cache, json.dumps({"scontrol": identity, "version": list(version)}),
                         mode=0o600, durable=False)
        except StateError:
            pass  # a cache: the next process asks scontrol again

    def job(self, job_id: int) -> JobInfo:
        """A job's request, state and per-node allocation, from Slurm's JSON only (what ``start_job``
        began for it, if it did)."""
        jid = int(job_id)
        started = self._started_jobs.pop(jid, None)
        return (started or self._job_started(jid))()

    def start_job(self, job_id: int) -> None:
        """Ask Slurm for a job now; the next ``job(job_id)`` reads the answer: Slurm answers while the
        caller builds what else it needs. Never raises: what fails here, that read reports."""
        jid = int(job_id)
        if jid not in self._started_jobs:
            try:
                self._started_jobs[jid] = self._job_started(jid)
            except SlurmError:
                pass

    def _job_started(self, jid: int) -> Callable[[], JobInfo]:
        if self.version() < JSON_SCONTROL_SINCE:
            # 22.05's `squeue --json` ignores every filter and prints all jobs (7 MB for 2,000 jobs, seconds
            # per call: a burst of Prologs timed out on it). One job's fields that no user writes instead.
            line = self._start("squeue", ["--noheader", "--states=all", f"--jobs={jid}",
                                          f"--Format={SQUEUE_JOB_FORMAT}"])
            return lambda: job_from_squeue_line(line(), jid)
        flag = JSON_PINNED if self.version() >= JSON_PINNED_SINCE else "--json"
        out = self._start("scontrol", ["show", "job", flag, str(jid)])

        def result() -> JobInfo:
            try:
                doc = json.loads(out())
            except ValueError as exc:
                raise SlurmError(f"Slurm printed no JSON for job {jid}: {exc}") from exc
            return job_by_id(doc, jid)

        return result

    def active_jobs_on(self, node: str) -> Dict[int, str]:
        """``{job_id: state}`` of jobs on ``node`` that may still own instances there."""
        out = self._run("squeue", ["--noheader", "--nodelist", node, "--states", "all",
                                   "--format", "%A|%T"])
        jobs: Dict[int, str] = {}
        for line in out.splitlines():
            job_id, _, state = line.strip().partition("|")
            if not job_id:
                continue
            base, flags = parse_job_state(state)
            if base in ACTIVE_STATES or ACTIVE_STATES.intersection(flags):
                jobs[int(job_id)] = base
        return jobs

    def pending_constraints(self) -> Tuple[str, ...]:
        """The feature constraint of every pending job (``squeue %f``): job_submit.lua puts a MIG job's
        request there as ``mig.<profile>.<k>``, which the exporter counts as pending demand."""
        out = self._run("squeue", ["--noheader", "--states", "PENDING", "--format", "%f"])
        return tuple(line.strip() for line in out.splitlines() if line.strip())

    def _node_fields(self, node: str, details: bool = False) -> Dict[str, str]:
        """``scontrol show node`` text as key -> value; only Slurm's own keys are read (the node's Reason
        and Comment are admins' text, never looked at). ``details`` (``-d``) adds ``GresUsed``."""
        args = ["show", "node", "-d", node] if details else ["show", "node", node]
        return _fields(self._run("scontrol", args))

    def node_features(self, node: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """``(available, active)`` features of ``node``: JSON from 24.11, ``scontrol show node`` text before
        (node features are set by admins and slurm-gpu only; no user writes on those lines)."""
        from slurm_gpu.slurm.parse import node_features_from_json

        if self.version() >= JSON_PINNED_SINCE:
            out = self._run("scontrol", ["show", "node", JSON_PINNED, node])
            try:
                return node_features_from_json(json.loads(out), node)
            except ValueError as exc:
                raise SlurmError(f"Slurm printed no JSON for node {node}: {exc}") from exc
        fields = self._node_fields(node)
        available = _feature_list(fields.get("AvailableFeatures", ""))
        return available, _feature_list(fields.get("ActiveFeatures", ""))

    def node_gres(self, node: str) -> NodeGres:
        """``(configured, allocated)`` gres of ``node`` (``Gres=``, ``GresUsed=``)."""
        return self.node_gres_started(node)()

    def node_gres_started(self, node: str) -> Callable[[], NodeGres]:
        """``node_gres`` asked now, read when the returned function is called (once): Slurm answers while
        the caller reads the node's GPUs."""
        out = self._start("scontrol", ["show", "node", "-d", node])

        def result() -> NodeGres:
            fields = _fields(out())
            if "GresUsed" not in fields:  # never decide on a missing count: 0 would free every slot
                raise SlurmError(f"scontrol show node -d {node} printed no GresUsed")
            return parse_gres_counts(fields.get("Gres", "")), parse_gres_counts(fields["GresUsed"])

        return result

    def pending_jobs(self) -> Tuple[PendingJob, ...]:
        """Every pending job (each array task on its own), highest priority first: its gres request per
        node, whether it is held and why, the nodes it must run on and its admin comment."""
        out = self._run("squeue", ["--noheader", "--array", "--states", "PENDING", "--sort", "-p,i",
                                   f"--Format={SQUEUE_PENDING_FORMAT}"])
        return pending_from_squeue(out)

    def release(self, job_id: str, admin_comment: str) -> None:
        """Release a held job (``123`` or an array task ``123_4``) and drop ``AWAIT_MARK`` from its admin
        comment (so that a later hold of its user's is never taken for ours)."""
        if not JOB_ID.fullmatch(job_id):
            raise SlurmError(f"not a job id: {job_id!r}")
        self._run("scontrol", ["release", job_id])
        words = admin_comment.split()
        if AWAIT_MARK in words:
            kept = " ".join(w for w in words if w != AWAIT_MARK)
            self._run("scontrol", ["update", f"jobid={job_id}", f"admincomment={kept}"])

    # -- writes ---------------------------------------------------------------------------------------
    def set_features(self, node: str, available: Iterable[str], active: Iterable[str]) -> None:
        """Publish a node's features; ``active`` must be a subset of ``available``."""
        avail = sorted(set(available))
        act = sorted(set(active))
        missing = set(act) - set(avail)
        if missing:
            raise SlurmError(f"active features not available on {node}: {sorted(missing)}")
        self._run("scontrol", ["update", f"nodename={node}", f"availablefeatures={','.join(avail)}",
                               f"activefeatures={','.join(act)}"])

    def set_gres(self, node: str, gres: Sequence[GresCount]) -> None:
        """Replace the node's gres counts live (count-only gres: no device files, no slurmd restart)."""
        text = ",".join(format_gres_count(g) for g in gres)
        self._run("scontrol", ["update", f"nodename={node}", f"gres={text}"])

    def drain(self, node: str, reason: str) -> None:
        """Take ``node`` out of service with ``reason`` (shown by ``sinfo -R``); running jobs go on."""
        text = " ".join(reason.split())
        self._run("scontrol", ["update", f"nodename={node}", "state=drain", f"reason={text}"])

    def requeue(self, job_id: int, reason: str, admin_comment: str) -> None:
        """Send a job back to the queue from its Prolog, with ``reason`` in its admin comment.

        ``Requeue=1`` first so that ``--no-requeue`` jobs are requeued too (we, not the job, failed).
        Slurm's requeue delay (~120 s) is kept on purpose: slurmd runs no Prolog for a job id whose
        credential it still caches, so a job restarted sooner on the same node would run without its
        instances (measured on 22.05).
        """
        jid = str(int(job_id))
        self._run("scontrol", ["update", f"jobid={jid}", "requeue=1"])
        self._run("scontrol", ["requeue", jid])
        self.annotate(job_id, admin_comment, f"{REQUEUE_MARK}:{reason}")

    def hold(self, job_id: int, reason: str, admin_comment: str) -> None:
        """Requeue a job held (it waits for an admin), with ``reason`` in its admin comment."""
        jid = str(int(job_id))
        self._run("scontrol", ["update", f"jobid={jid}", "requeue=1"])
        self._run("scontrol", ["requeuehold", jid])
        self.annotate(job_id, admin_comment, f"{REFUSE_MARK}:{reason}")

    def cancel(self, job_id: int, reason: str, admin_comment: str) -> None:
        self.annotate(job_id, admin_comment, f"{REFUSE_MARK}:{reason}")
        self._run("scancel", [str(int(job_id))])

    def annotate(self, job_id: int, admin_comment: str, mark: str) -> None:
        """Replace our marker in the admin comment, keeping the recorded request before it."""
        kept = [w for w in admin_comment.split() if not w.startswith((REQUEUE_MARK, REFUSE_MARK))]
        text = " ".join([*kept, _clean(mark)])
        self._run("scontrol", ["update", f"jobid={int(job_id)}", f"admincomment={text}"])


def _clean(text: str) -> str:
    """One word: the admin comment is split on blanks when our marker is replaced."""
    return "_".join(text.split())


def _feature_list(text: str) -> Tuple[str, ...]:
    if not text or text == "(null)":
        return ()
    return tuple(f for f in text.split(",") if f)


def _fields(text: str) -> Dict[str, str]:
    """``scontrol show node`` text as key -> value, the first of each key."""
    from slurm_gpu.slurm.parse import parse_scontrol_pairs

    fields: Dict[str, str] = {}
    for line in text.splitlines():
        for k, v in parse_scontrol_pairs(line.strip()).items():
            fields.setdefault(k, v)
    return fields


def _minimal_env() -> Dict[str, str]:
    """Hooks start with almost no environment; keep what Slurm's tools need (SLURM_CONF, auth)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_CONF", "MUNGE", "LANG", "LC_"))}
    keep.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return keep
