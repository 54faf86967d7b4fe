"""Pure parsers for what Slurm 22.05 to 26.05 prints about jobs and nodes (no I/O).

Forms handled (recorded outputs live in tests/fixtures/slurm/):
- request strings: ``gres:mig:4`` (22.05 ``tres_per_node``), ``gres/mig:4`` (24.11+), ``gres/mig=4``
  (TRES form, ``AllocTRES``), ``mig:4(IDX:0-3)`` / ``gpu:1g.10gb:2(IDX:3-4)`` / ``mig(CNT:4)``
  (``gres_detail``), comma-separated lists of those, counts with ``k``/``m``/``g``/``t`` suffixes; the
  grammar is :mod:`slurm_gpu.core.gres`, this module only skips the TRES that are not gres;
- ``job_state``: a string (22.05) or a list such as ``["RUNNING", "REQUEUED"]`` (24.11+);
- ``scontrol show job -d`` text, ``squeue --json`` and ``scontrol show job --json`` documents;
- hostlists such as ``n[01-03,7],gpu5``;
- the admin comment ``slurm-gpu:gpu:<profile>:<N>`` that job_submit.lua records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import BadInputError, SlurmError
from slurm_gpu.core.gres import (
    parse_count,
    parse_term,
    split_detail,
    split_outside,
    split_terms,
    strip_prefix,
)

__all__ = [
    "GresCount",
    "NodeGres",
    "MigRequest",
    "JobInfo",
    "ACTIVE_STATES",
    "parse_gres_counts",
    "gres_total",
    "parse_admin_comment",
    "format_admin_comment",
    "parse_job_state",
    "expand_hostlist",
    "parse_scontrol_pairs",
    "job_from_scontrol_text",
    "SQUEUE_JOB_FORMAT",
    "job_from_squeue_line",
    "job_from_json",
    "jobs_from_json",
    "job_by_id",
    "node_features_from_json",
    "PendingJob",
    "AWAIT_MARK",
    "BAD_CONSTRAINTS",
    "JOB_ID",
    "SQUEUE_PENDING_FORMAT",
    "pending_from_squeue",
]

# States in which a job may own instances on its nodes (reconcile must not touch those).
ACTIVE_STATES = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
     "RESIZING", "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "SPECIAL_EXIT", "POWER_UP_NODE"}
)
# Base states (the rest of a 24.11+ list are flags).
_BASE_STATES = frozenset(
    {"PENDING", "RUNNING", "SUSPENDED", "COMPLETE", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT",
     "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}
)

# `slurm-gpu:gpu:<profile or size>:<N>`, or `slurm-gpu:gpu:<N>` for whole GPUs on a mixed-model cluster.
_REQUEST_TOKEN = re.compile(
    r"slurm-gpu:gpu:(?:(?P<profile>[A-Za-z0-9.+_-]+):(?P<count>\d+)|(?P<whole>\d+)(?![A-Za-z0-9.+_:-]))"
)


@dataclass(frozen=True)
class GresCount:
    """One gres term: ``name`` (``gpu``, ``mig``, ``shard``), optional ``type`` and its count."""

    name: str
    type: Optional[str]
    count: int


NodeGres = Tuple[Tuple[GresCount, ...], Tuple[GresCount, ...]]  # a node's (configured, allocated) gres


@dataclass(frozen=True)
class MigRequest:
    """What the user asked for, as job_submit.lua recorded it: ``count`` instances of ``profile``.

    ``profile`` is a profile name, or, where the cluster's models resolve the request differently, a
    memory size (``20gb``) or ``""`` for whole GPUs; the node agent resolves those for its own GPUs.
    """

    profile: str
    count: int


@dataclass(frozen=True)
class JobInfo:
    """The parts of a job that the node agent needs, whatever the Slurm version printed."""

    job_id: int
    state: str  # base state, e.g. RUNNING
    flags: Tuple[str, ...] = ()  # 24.11+ state flags, e.g. ("REQUEUED",), or 22.05 combined states
    user_id: Optional[int] = None
    nodes: Tuple[str, ...] = ()  # expanded allocation, empty while pending
    admin_comment: str = ""
    tres_per_node: str = ""  # what was asked per node, e.g. "gres:mig:4"
    gres_by_node: Mapping[str, str] = field(default_factory=dict)  # allocation detail per node
    features: str = ""  # the constraint expression
    restart_count: int = 0
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES or bool(ACTIVE_STATES.intersection(self.flags))

    def request(self) -> Optional[MigRequest]:
        return parse_admin_comment(self.admin_comment)

    def _gres_on(self, node: Optional[str]) -> Tuple[GresCount, ...]:
        """What Slurm allocated on ``node`` (detail when known, else the per-node request)."""
        text = self.gres_by_node.get(node, "") if node else ""
        return parse_gres_counts(text or self.tres_per_node)

    def mig_slices_per_node(self, node: Optional[str] = None) -> int:
        """Memory slices (gres ``mig``) Slurm allocated on ``node``."""
        return gres_total(self._gres_on(node), "mig")

    def typed_counts_per_node(self, name: str, node: Optional[str] = None) -> Dict[str, int]:
        """``{type: count}`` of the typed gres ``name`` (count admission's ``migp``) on ``node``."""
        out: Dict[str, int] = {}
        for g in self._gres_on(node):
            if g.name == name and g.type:
                out[g.type] = out.get(g.type, 0) + g.count
        return out


def _parse_term(term: str, raw: str) -> Optional[GresCount]:
    """One term of a gres or TRES list as Slurm prints it; None for a TRES that is no gres."""
    body, prefixed = strip_prefix(split_detail(term)[0])
    if not prefixed and ("=" in body or "/" in body.split(":", 1)[0]):
        # TRES of another kind (cpu=1, mem=1G, billing=1, license/x=1): not a gres.
        return None
    parsed = parse_term(term)
    count = 1 if parsed.count is None else parse_count(parsed.count, raw)
    return GresCount(parsed.name, parsed.type, count)


def parse_gres_counts(text: Optional[str]) -> Tuple[GresCount, ...]:
    """All gres terms of a request/allocation string; non-gres TRES (cpu=, mem=) are skipped."""
    if not text or text in ("(null)", "N/A", "None"):
        return ()
    out = []
    for term in split_terms(text):
        if not term:
            continue  # a trailing or doubled comma
        parsed = _parse_term(term, text)
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def format_gres_count(g: GresCount) -> str:
    """A gres term as ``scontrol update ... gres=`` takes it: ``name[:type]:count``."""
    return f"{g.name}:{g.type}:{g.count}" if g.type else f"{g.name}:{g.count}"


def gres_total(counts: Sequence[GresCount], name: str) -> int:
    """Sum of ``name`` counts; a typed and an untyped term of one gres describe the same units once."""
    untyped = [c.count for c in counts if c.name == name and c.type is None]
    if untyped:
        return max(untyped)
    return sum(c.count for c in counts if c.name == name)


def parse_admin_comment(text: Optional[str]) -> Optional[MigRequest]:
    """The recorded MIG request, or None when the job has none. Two different records are refused."""
    if not text:
        return None
    found = {
        ("", int(m.group("whole"))) if m.group("whole") else (m.group("profile"), int(m.group("count")))
        for m in _REQUEST_TOKEN.finditer(text)
    }
    if not found:
        return None
    if len(found) > 1:
        raise BadInputError(f"several slurm-gpu requests in admin comment {text!r}", part=text)
    profile, count = found.pop()
    if count < 1:
        raise BadInputError(f"slurm-gpu request count must be at least 1: {text!r}", part=text)
    return MigRequest(profile, count)


def format_admin_comment(req: MigRequest) -> str:
    if not req.profile:
        return f"slurm-gpu:gpu:{req.count}"
    return f"slurm-gpu:gpu:{req.profile}:{req.count}"


def parse_job_state(value: Any) -> Tuple[str, Tuple[str, ...]]:
    """``(base_state, flags)`` from a 22.05 string (``RUNNING``, ``COMPLETING``) or a 24.11+ list."""
    if isinstance(value, str):
        items = [v for v in re.split(r"[,+ ]", value) if v]
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        raise SlurmError(f"unexpected job_state {value!r}")
    if not items:
        raise SlurmError(f"empty job_state {value!r}")
    base = next((s for s in items if s in _BASE_STATES), items[0])
    flags = tuple(s for s in items if s != base)
    return base, flags


_HOST_RANGE = re.compile(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)")


def expand_hostlist(text: Optional[str]) -> Tuple[str, ...]:
    """``n[01-03,7],gpu5`` -> ``("n01", "n02", "n03", "n7", "gpu5")`` (one bracket per name)."""
    if not text or text in ("(null)", "None"):
        return ()
    out: List[str] = []
    for item in _split_brackets(text):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if not m:
            out.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            lo, _, hi = rng.partition("-")
            if not hi:
                out.append(f"{prefix}{lo}{suffix}")
                continue
            width = len(lo)
            for n in range(int(lo), int(hi) + 1):
                out.append(f"{prefix}{n:0{width}d}{suffix}")
    return tuple(out)


def _split_brackets(text: str) -> List[str]:
    return [p.strip() for p in split_outside(text, ",", "[]") if p.strip()]


# A key starts a field when it follows whitespace (or the line start) and is followed by "=".
_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_pairs(line: str) -> Dict[str, str]:
    """``Key=Value`` fields of one ``scontrol show`` line; values may hold spaces (Comment=a b)."""
    matches = list(_KEY.finditer(line))
    out: Dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out.setdefault(m.group(1), line[m.end():end].strip())
    return out


def job_from_scontrol_text(text: str) -> JobInfo:
    """One job from ``scontrol show job -d <id>`` (22.05 to 26.05; with or without ``-o``)."""
    fields: Dict[str, str] = {}
    gres_by_node: Dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        pairs = parse_scontrol_pairs(stripped)
        if stripped.startswith("Nodes=") and "CPU_IDs" in pairs:
            # detail line of -d: "Nodes=n[1-2] CPU_IDs=0 Mem=0 GRES=mig:4(IDX:...)"
            for node in expand_hostlist(pairs.get("Nodes", "")):
                gres_by_node[node] = pairs.get("GRES", "")
            continue
        if stripped.startswith("Comment=") or stripped.startswith("AdminComment="):
            # Comments may contain '=' and spaces: keep the whole rest of the line.
            key, _, value = stripped.partition("=")
            fields.setdefault(key, value.strip())
            continue
        for k, v in pairs.items():
            fields.setdefault(k, v)
    if "JobId" not in fields:
        raise SlurmError("scontrol output has no JobId field")
    state, flags = parse_job_state(fields.get("JobState", ""))
    uid = _uid_from_userid(fields.get("UserId", ""))
    nodes = expand_hostlist(fields.get("NodeList", "")) if fields.get("NodeList") else ()
    return JobInfo(
        job_id=int(fields["JobId"]),
        state=state,
        flags=flags,
        user_id=uid,
        nodes=nodes,
        admin_comment=_none_to_empty(fields.get("AdminComment", "")),
        tres_per_node=_none_to_empty(fields.get("TresPerNode", fields.get("TRES_PER_NODE", ""))),
        gres_by_node=gres_by_node,
        features=_none_to_empty(fields.get("Features", "")),
        restart_count=int(fields.get("Restarts", "0") or 0),
        reason=_none_to_empty(fields.get("Reason", "")),
    )


def _none_to_empty(value: str) -> str:
    return "" if value in ("(null)", "None", "N/A") else value


def _uid_from_userid(text: str) -> Optional[int]:
    m = re.search(r"\((\d+)\)", text)  # "alice(1001)"
    return int(m.group(1)) if m else None


def _json_number(value: Any) -> Optional[int]:
    """22.05 prints numbers; 23.02+ may wrap them as {"set": true, "number": N}."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None or value == "":
        return None
    return int(value)


def _json_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def job_from_json(obj: Mapping[str, Any]) -> JobInfo:
    """One job object of ``squeue --json`` (v0.0.38 in 22.05 .. v0.0.4x) or ``scontrol show job --json``."""
    try:
        job_id = _json_number(obj["job_id"])
    except KeyError as exc:
        raise SlurmError("job object has no job_id") from exc
    if job_id is None:
        raise SlurmError(f"job object has an empty job_id: {obj.get('job_id')!r}")
    state, flags = parse_job_state(obj.get("job_state", ""))
    gres_by_node: Dict[str, str] = {}
    nodes = expand_hostlist(_json_text(obj.get("nodes", "")))
    detail = obj.get("gres_detail") or []
    # gres_detail lists one entry per allocated node, in node order.
    if isinstance(detail, list) and len(detail) == len(nodes):
        gres_by_node = {n: str(d) for n, d in zip(nodes, detail)}
    restart = _json_number(obj.get("restart_cnt", 0)) or 0
    return JobInfo(
        job_id=job_id,
        state=state,
        flags=flags,
        user_id=_json_number(obj.get("user_id")),
        nodes=nodes,
        admin_comment=_json_text(obj.get("admin_comment", "")),
        tres_per_node=_json_text(obj.get("tres_per_node", "")),
        gres_by_node=gres_by_node,
        features=_json_text(obj.get("features", "")),
        restart_count=restart,
        reason=_json_text(obj.get("state_reason", "")),
    )


def jobs_from_json(doc: Mapping[str, Any]) -> Tuple[JobInfo, ...]:
    """Every job of a ``squeue --json`` / ``scontrol show job --json`` document."""
    jobs = doc.get("jobs")
    if not isinstance(jobs, list):
        raise SlurmError("Slurm JSON has no 'jobs' list")
    return tuple(job_from_json(j) for j in jobs)


def job_by_id(doc: Mapping[str, Any], job_id: int) -> JobInfo:
    """The one job ``job_id`` of a JSON document (22.05's ``squeue --json`` lists every job: only that one is
    parsed, so no other job's content can fail the read)."""
    jobs = doc.get("jobs")
    if not isinstance(jobs, list):
        raise SlurmError("Slurm JSON has no 'jobs' list")
    found = []
    for obj in jobs:
        try:
            if isinstance(obj, Mapping) and _json_number(obj.get("job_id")) == job_id:
                found.append(obj)
        except (TypeError, ValueError):
            continue
    if len(found) != 1:
        raise SlurmError(f"Slurm lists {len(found)} jobs with id {job_id}")
    return job_from_json(found[0])


def _feature_names(value: Any) -> Tuple[str, ...]:
    """A node's features as v0.0.40+ prints them (a list) or v0.0.39 (one comma-separated string)."""
    text = _json_text(value)
    if not text or text == "(null)":
        return ()
    return tuple(f for f in text.split(",") if f)


def node_features_from_json(doc: Mapping[str, Any], node: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """``(available, active)`` features of ``node`` from ``scontrol show node --json`` (24.11+)."""
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise SlurmError("Slurm JSON has no 'nodes' list")
    found = [n for n in nodes if isinstance(n, Mapping) and n.get("name") == node]
    if len(found) != 1:
        raise SlurmError(f"Slurm lists {len(found)} nodes named {node}")
    return _feature_names(found[0].get("features")), _feature_names(found[0].get("active_features"))


# One job's fields that no user writes, for Slurm before 23.02 (no `scontrol show job --json`; `squeue --json`
# there ignores -j and prints every job). The admin comment (job_submit.lua's and admins' text) comes last;
# each field ends in the ASCII unit separator, which none of them can hold; width 0 prints whole values.
_SEP = "\x1f"
_SQUEUE_JOB_FIELDS = ("JobID", "State", "UserID", "NodeList", "tres-per-node", "admin_comment")


def _squeue_format(fields: Sequence[str]) -> str:
    """``squeue --Format`` of ``fields``, whole values, each but the last ended by the unit separator."""
    return ",".join(f"{f}:0{_SEP}" for f in fields[:-1]) + f",{fields[-1]}:0"


SQUEUE_JOB_FORMAT = _squeue_format(_SQUEUE_JOB_FIELDS)
_GRES_CHARS = re.compile(r"[A-Za-z0-9_:,./=()+-]*")
_EMPTY = ("", "N/A", "(null)")


def job_from_squeue_line(text: str, job_id: int) -> JobInfo:
    """The job of ``squeue --noheader --jobs=<id> --Format=<SQUEUE_JOB_FORMAT>``: the one line whose JobID
    (Slurm's own, first) is ``job_id``; a heterogeneous job's leader id lists every component, each with its
    own id. :class:`SlurmError` unless exactly one line is that job's and it is well formed (a separator
    too many is refused, never guessed around)."""
    lines = [line for line in text.splitlines() if line.strip().split(_SEP, 1)[0].strip() == str(job_id)]
    if len(lines) != 1:
        raise SlurmError(f"squeue printed {len(lines)} lines for job {job_id}")
    parts = [p.strip() for p in lines[0].split(_SEP)]
    if len(parts) != len(_SQUEUE_JOB_FIELDS):
        raise SlurmError(f"squeue's line for job {job_id} has {len(parts)} fields, "
                         f"not {len(_SQUEUE_JOB_FIELDS)}")
    _jid, state, uid, nodelist, tres, comment = parts
    if not uid.isdigit():
        raise SlurmError(f"squeue's user id of job {job_id} is {uid!r}")
    if not _GRES_CHARS.fullmatch(tres):
        raise SlurmError(f"squeue's tres-per-node of job {job_id} is not a gres list: {tres!r}")
    base, flags = parse_job_state(state)
    return JobInfo(job_id=job_id, state=base, flags=flags, user_id=int(uid),
                   nodes=expand_hostlist("" if nodelist in _EMPTY else nodelist),
                   admin_comment="" if comment in _EMPTY else comment,
                   tres_per_node="" if tres in _EMPTY else tres)


# job_submit.lua's mark on a MIG job it held because it names its nodes (count admission: slurmctld refuses
# such a job while none of them publishes its profile); the node agent releases it (node.publish).
AWAIT_MARK = "slurm-gpu-awaits-nodes"
# Slurm's wait reason of a job it held (priority 0) because its required nodes cannot satisfy it now.
BAD_CONSTRAINTS = "BadConstraints"

# A job id as scontrol takes it: ``123``, or an array task ``123_4``.
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")

# The pending queue as count admission reads it (every array task on its own line): Slurm's own fields,
# the admin comment (job_submit.lua's record) last, as above.
_PENDING_FIELDS = ("JobArrayID", "PriorityLong", "Reason", "ReqNodes", "tres-per-node", "admin_comment")
SQUEUE_PENDING_FORMAT = _squeue_format(_PENDING_FIELDS)


@dataclass(frozen=True)
class PendingJob:
    """One pending job (or array task) of ``squeue --Format=<SQUEUE_PENDING_FORMAT>``."""

    job_id: str  # ``123`` or ``123_4``: what scontrol takes
    held: bool  # priority 0: held by its user, an admin, job_submit.lua or Slurm (BadConstraints)
    reason: str  # Slurm's wait reason (JobHeldUser, BadConstraints, Resources, ...)
    req_nodes: Tuple[str, ...]  # the nodes it must run on (``--nodelist``), expanded
    tres_per_node: str
    admin_comment: str


def pending_from_squeue(text: str) -> Tuple[PendingJob, ...]:
    """The jobs of ``squeue --noheader --states=PENDING --Format=<SQUEUE_PENDING_FORMAT>``, in its order;
    :class:`SlurmError` on a line that is not well formed."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(_SEP, len(_PENDING_FIELDS) - 1)]
        if len(parts) != len(_PENDING_FIELDS):
            raise SlurmError(f"squeue's pending line has {len(parts)} fields, not {len(_PENDING_FIELDS)}")
        jid, priority, reason, nodes, tres, comment = parts
        if not JOB_ID.fullmatch(jid) or not priority.isdigit():
            raise SlurmError(f"squeue's pending line names job {jid!r} with priority {priority!r}")
        if not _GRES_CHARS.fullmatch(tres):
            raise SlurmError(f"squeue's tres-per-node of job {jid} is not a gres list: {tres!r}")
        out.append(PendingJob(job_id=jid, held=int(priority) == 0, reason=reason,
                              req_nodes=expand_hostlist("" if nodes in _EMPTY else nodes),
                              tres_per_node="" if tres in _EMPTY else tres,
                              admin_comment="" if comment in _EMPTY else comment))
    return tuple(out)
