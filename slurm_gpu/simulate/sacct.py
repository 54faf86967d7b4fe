"""A site's Slurm accounting (``sacct -P``) as a trace, and what MIG would have done with that history.

Per job (allocation row): submit times become seconds after the first submission, the duration is
End - Start, the request comes from, in order:

1. slurm-gpu's admin comment (``slurm-gpu:gpu:<profile>:<N>``), what job_submit.lua recorded;
2. ReqTRES (else AllocTRES) ``gres/gpu:<type>=N`` or ``gres/gpu=N``; a site's type name goes through the
   mapping (``--types``: ``{site name: profile or gpu}``), Slurm's autodetected MIG names
   (``nvidia_h100_80gb_hbm3_3g.40gb``) read as their profile, GPU types (``a100``) stay whole GPUs;
3. ``gres/shard=N``: the smallest profile with at least N / shards-per-GPU of the GPU's compute slices
   (as asked, without MIG, such a job is modelled as holding its whole GPU: shards share GPUs with no
   partition the simulator could place).

TRES counts are job totals: a job on ``NNodes`` nodes asks ``N / NNodes`` per node (rounded up, and
counted in ``uneven_multi_node`` when it does not divide).

**Right-sizing** (``rightsize``): a whole-GPU job with one GPU per node, whose peak GPU memory is known
(the largest ``gres/gpumem`` of its steps' ``TRESUsageInMax``, or a column the site provides, MiB unless
it carries a K/M/G/T unit), becomes the smallest profile whose memory holds ``peak x (1 + margin)``
(fewest memory slices, then fewest compute slices). Jobs on several GPUs per node stay whole: a CUDA
process sees one MIG instance. Run times are kept as recorded, so the report's capacity freed is what
MIG would have given back if every right-sized job ran as fast on its instance (an upper bound for
compute-bound jobs).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from slurm_gpu.core.catalog import GpuModel, Profile
from slurm_gpu.core.errors import BadInputError, RequestError
from slurm_gpu.simulate.slots import names_model
from slurm_gpu.simulate.traces import TraceJob, default_model, normalise_type
from slurm_gpu.slurm.parse import parse_admin_comment, parse_gres_counts

__all__ = ["SacctOptions", "SacctReport", "Converted", "convert", "from_sacct", "parse_memory_mib",
           "load_types"]

NEEDED = ("JobID", "Submit", "Start", "End", "ReqTRES")
COLUMNS = "JobID,Submit,Start,End,ReqTRES,AllocTRES,NNodes,Timelimit,AdminComment,TRESUsageInMax"
_LIMIT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNIT_MIB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
_Row = Tuple[str, float, float, str, int, Optional[float]]


@dataclass
class SacctOptions:
    model: GpuModel  # the GPUs the history ran on: shards, right-sizing and type checks use it
    types: Dict[str, str] = field(default_factory=dict)  # site type name -> profile name or "gpu"
    rightsize: bool = False
    margin: float = 0.1
    peak_column: Optional[str] = None
    shards_per_gpu: Optional[int] = None  # default: the model's compute slices (as `simulate`'s shards)


@dataclass
class SacctReport:
    """What the conversion did, and (with right-sizing) what MIG would have done for that history."""

    rows: int = 0
    jobs: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    multi_node: int = 0
    uneven_multi_node: int = 0
    shards: int = 0
    types: Dict[str, str] = field(default_factory=dict)  # site type -> what it was read as
    unknown_types: Dict[str, int] = field(default_factory=dict)  # types the model has no meaning for
    whole_gpu_jobs: int = 0
    rightsized: Dict[str, int] = field(default_factory=dict)  # profile -> jobs
    not_rightsized: Dict[str, int] = field(default_factory=dict)  # reason -> jobs
    whole_gpu_hours: float = 0.0  # whole-GPU jobs as they ran: GPU-hours
    compute_slice_hours: Tuple[float, float] = (0.0, 0.0)  # whole-GPU jobs: (as they ran, right-sized)
    memory_slice_hours: Tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        before_c, after_c = self.compute_slice_hours
        before_m, after_m = self.memory_slice_hours
        return {
            "rows": self.rows, "jobs": self.jobs, "skipped": dict(self.skipped),
            "multi_node": self.multi_node, "uneven_multi_node": self.uneven_multi_node,
            "shards": self.shards, "types": dict(self.types), "unknown_types": dict(self.unknown_types),
            "whole_gpu_jobs": self.whole_gpu_jobs, "rightsized": dict(sorted(self.rightsized.items())),
            "rightsized_jobs": sum(self.rightsized.values()),
            "not_rightsized": dict(self.not_rightsized),
            "whole_gpu_hours": round(self.whole_gpu_hours, 2),
            "compute_slice_hours": [round(before_c, 2), round(after_c, 2)],
            "memory_slice_hours": [round(before_m, 2), round(after_m, 2)],
            "compute_freed": round(1 - after_c / before_c, 4) if before_c else 0.0,
            "memory_freed": round(1 - after_m / before_m, 4) if before_m else 0.0,
        }


@dataclass
class Converted:
    jobs: List[TraceJob]  # the trace (right-sized where asked)
    original: List[TraceJob]  # the same jobs as they asked (whole GPUs stay whole)
    report: SacctReport


def _bump(counts: Dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def parse_memory_mib(text: str) -> Optional[float]:
    """``12345`` (MiB), ``12G``, ``800M``, ``1.5T`` -> MiB; None for an empty or unreadable value."""
    m = _MEMORY.match(text or "")
    if not m:
        return None
    return float(m.group(1)) * _UNIT_MIB[m.group(2).upper()]


def load_types(path: str, model: GpuModel) -> Dict[str, str]:
    """A YAML mapping ``{site type: profile name or gpu}``, checked against ``model``."""
    import yaml  # lazy: only mapping files need it

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"cannot read type mapping {path}: {exc}", part=path) from exc
    if not isinstance(data, dict) or not data:
        raise BadInputError(f"type mapping {path}: expected a mapping of site type to profile", part=path)
    out: Dict[str, str] = {}
    for site, target in data.items():
        name = str(target).strip().lower()
        if name != "gpu" and not model.has_profile(name):
            raise BadInputError(
                f"type mapping {path}: {site!r} maps to {target!r}, neither gpu nor a profile of {model.key}",
                part=str(site),
            )
        out[str(site).strip().lower()] = name
    return out


# -- fields ---------------------------------------------------------------------------------------------
def _time(text: str) -> Optional[float]:
    text = text.strip()
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadInputError(f"sacct time {text!r} is not YYYY-MM-DDTHH:MM:SS", part=text) from None


def _limit(text: str) -> Optional[float]:
    m = _LIMIT.match(text.strip())
    if not m:
        return None  # UNLIMITED, Partition_Limit, empty
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if m.group(2) is None:  # MM:SS
        hours, minutes, seconds = 0, int(m.group(3)), int(m.group(4))
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _peak_from_tres(text: str) -> Optional[float]:
    """gres/gpumem of a TRESUsageInMax value, in MiB (sacct gives bytes with a unit)."""
    try:
        counts = parse_gres_counts(text)
    except RequestError:
        return None
    found = [c.count for c in counts if c.name == "gpumem"]
    return max(found) / (1024 * 1024) if found else None


class _Converter:
    def __init__(self, options: SacctOptions):
        self.o = options
        self.report = SacctReport()
        model = options.model
        self.full = model.full_profile()
        self.spg = options.shards_per_gpu or model.compute_slices_total
        # smallest first: fewest memory slices, then fewest compute slices
        self.by_size = sorted(model.base_profiles(), key=lambda p: (p.memory_slices, p.compute_slices))
        self.shard_job = False

    # the request --------------------------------------------------------------------------------------
    def _type(self, raw: str) -> str:
        """A gres type as the trace spells it: mapped, autodetected MIG names as their profile."""
        low = raw.lower()
        if low in self.o.types:
            read = self.o.types[low]
        else:
            read = normalise_type(low)
        if read != low:
            self.report.types[low] = read
        if read != "gpu" and not self.o.model.has_profile(read) and not names_model(read, self.o.model):
            _bump(self.report.unknown_types, read)
        return read

    def _shard_profile(self, shards: int) -> Tuple[str, int]:
        """(trace key, instances) for N shards on one node."""
        if shards >= self.spg:
            return "gpu", math.ceil(shards / self.spg)
        need = shards * self.o.model.compute_slices_total / self.spg
        for p in sorted(self.by_size, key=lambda p: (p.compute_slices, p.memory_slices)):
            if p.compute_slices >= need:
                return p.name, 1
        return "gpu", 1

    def request(self, row: Dict[str, str], nodes: int) -> Optional[Tuple[str, int]]:
        """(trace key, count per node) or None (no GPU); ``shard_job`` says whether it came from shards."""
        self.shard_job = False
        recorded = parse_admin_comment(row.get("AdminComment", ""))
        if recorded is not None:  # what our job_submit.lua recorded: per node already
            return (recorded.profile or "gpu", recorded.count)
        typed = untyped = shards = None
        for term in parse_gres_counts(row.get("ReqTRES", "") or row.get("AllocTRES", "")):
            if term.name == "gpu" and term.type:
                typed = (term.type, term.count)
            elif term.name == "gpu":
                untyped = term.count
            elif term.name == "shard":
                shards = term.count
        total: Optional[int] = typed[1] if typed else untyped
        key = self._type(typed[0]) if typed else "gpu"
        if total is None and shards:
            self.report.shards += 1
            self.shard_job = True
            return self._shard_profile(self._per_node(shards, nodes))
        if total is None:
            return None
        return key, self._per_node(total, nodes)

    def _per_node(self, total: int, nodes: int) -> int:
        if nodes > 1:
            self.report.multi_node += 1
            if total % nodes:
                self.report.uneven_multi_node += 1
        return max(1, math.ceil(total / max(nodes, 1)))

    # right-sizing -------------------------------------------------------------------------------------
    def _whole(self, key: str) -> bool:
        return key == "gpu" or names_model(key, self.o.model)

    def rightsize(self, key: str, count: int, peak: Optional[float]) -> Optional[Profile]:
        """The profile a whole-GPU job would have had, or None (counted by reason)."""
        if count > 1:
            _bump(self.report.not_rightsized, "several GPUs per node (a process sees one MIG instance)")
            return None
        if peak is None:
            _bump(self.report.not_rightsized, "no recorded GPU memory")
            return None
        need = peak * (1 + self.o.margin)
        for p in self.by_size:
            if p.usable_memory_mib >= need:
                if p.profile_id == self.full.profile_id:
                    _bump(self.report.not_rightsized, "its peak needs the whole GPU")
                    return None
                return p
        _bump(self.report.not_rightsized, "its peak needs the whole GPU")
        return None

    def account(self, key: str, count: int, nodes: int, hours: float, chosen: Optional[Profile]) -> None:
        r = self.report
        r.whole_gpu_jobs += 1
        n = count * nodes
        r.whole_gpu_hours += n * hours
        after = chosen or self.full
        c0, c1 = r.compute_slice_hours
        m0, m1 = r.memory_slice_hours
        gh = n * hours
        r.compute_slice_hours = (c0 + self.full.compute_slices * gh, c1 + after.compute_slices * gh)
        r.memory_slice_hours = (m0 + self.full.memory_slices * gh, m1 + after.memory_slices * gh)
        if chosen is not None:
            _bump(r.rightsized, chosen.name)


def _rows(lines: Iterable[str]) -> Tuple[List[str], Iterator[Tuple[int, str]]]:
    it: Iterator[str] = (ln.rstrip("\n") for ln in lines)
    header = next(it, None)
    if header is None:
        return [], iter(())
    columns = header.split("|")
    if not set(NEEDED) <= set(columns):
        raise BadInputError(
            f"sacct header lacks {sorted(set(NEEDED) - set(columns))}: run sacct -P with -o {COLUMNS}",
            part=header,
        )
    return columns, ((n, ln) for n, ln in enumerate(it, 2) if ln.strip())


def convert(lines: Iterable[str], options: SacctOptions,
            warn: Optional[Callable[[str], None]] = None) -> Converted:
    """The trace of ``sacct -P -o JobID,Submit,Start,End,ReqTRES,...`` rows (steps give the peak GPU
    memory: leave ``-X`` out to right-size), and the report of what was done."""
    columns, rows = _rows(lines)
    conv = _Converter(options)
    if options.peak_column and columns and options.peak_column not in columns:
        raise BadInputError(f"sacct header has no column {options.peak_column!r}", part=options.peak_column)
    jobs: List[Tuple[Dict[str, str], int, str]] = []
    peaks: Dict[str, float] = {}
    for n, line in rows:
        values = line.split("|")
        if len(values) < len(columns):
            raise BadInputError(f"sacct line {n}: {len(values)} fields, header has {len(columns)}", part=line)
        row = dict(zip(columns, values))
        conv.report.rows += 1
        job_id, _, step = row["JobID"].partition(".")
        peak = _peak(row, options.peak_column)
        if peak is not None:
            peaks[job_id] = max(peak, peaks.get(job_id, 0.0))
        if step:
            _bump(conv.report.skipped, "step")
        else:
            jobs.append((row, n, line))
    raw: List[_Row] = []
    original: Dict[str, str] = {}
    for row, n, line in jobs:
        got = _job(conv, row, n, line, peaks.get(row["JobID"]), original)
        if isinstance(got, str):
            _bump(conv.report.skipped, got)
        else:
            raw.append(got)
    if warn:
        for why, count in conv.report.skipped.items():
            warn(f"skipped {count} sacct rows: {why}")
    conv.report.jobs = len(raw)
    t0 = min((r[1] for r in raw), default=0.0)
    out = sorted((TraceJob(jid, s - t0, d, g, nn, lim) for jid, s, d, g, nn, lim in raw),
                 key=lambda j: j.submit)
    before = [TraceJob(j.id, j.submit, j.duration, original.get(j.id, j.gres), j.nodes, j.time_limit)
              for j in out]
    return Converted(out, before, conv.report)


def _peak(row: Dict[str, str], column: Optional[str]) -> Optional[float]:
    if column:
        return parse_memory_mib(row.get(column, ""))
    return _peak_from_tres(row.get("TRESUsageInMax", ""))


def _job(conv: _Converter, row: Dict[str, str], n: int, line: str, peak: Optional[float],
         original: Dict[str, str]) -> Union[str, _Row]:
    """One allocation row as (job id, submit, duration, gres, nodes, limit), or why it is skipped."""
    submit, start, end = (_time(row[k]) for k in ("Submit", "Start", "End"))
    nodes = int(row.get("NNodes") or 1)
    try:
        req = conv.request(row, nodes)
    except (RequestError, BadInputError) as exc:
        raise BadInputError(f"sacct line {n}: {exc}", part=line) from None
    if req is None:
        return "no GPU"
    if submit is None or start is None or end is None or end < start:
        return "did not run"
    key, count = req
    duration = end - start
    gres = f"gpu:{count}" if key == "gpu" else f"gpu:{key}:{count}"
    if conv.shard_job:  # as asked, without MIG: Slurm's shards share whole GPUs; modelled as holding them
        original[row["JobID"]] = f"gpu:{count}"
    if conv.o.rightsize and conv._whole(key):
        chosen = conv.rightsize(key, count, peak)
        conv.account(key, count, nodes, duration / 3600.0, chosen)
        if chosen is not None:
            original[row["JobID"]] = gres
            gres = f"gpu:{chosen.name}:1"
    limit = _limit(row.get("Timelimit", ""))
    if limit is not None and limit < duration:
        limit = duration  # Slurm's OverTimeLimit grace
    return row["JobID"], submit, duration, gres, nodes, limit


def from_sacct(lines: Iterable[str], warn: Optional[Callable[[str], None]] = None,
               model: Optional[GpuModel] = None) -> List[TraceJob]:
    """The jobs as they asked (no right-sizing) on ``model`` (default H100-80GB): :func:`convert`'s trace."""
    return convert(lines, SacctOptions(model or default_model()), warn).jobs
