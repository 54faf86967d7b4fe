"""Job traces for the simulator: the JSON-lines format, seeded generators, and a converter from ``sacct -P``.

One job per line (seconds)::

    {"id": "17", "submit": 120.0, "duration": 3600.0, "gres": "gpu:3g.40gb:1", "time_limit": 7200.0}

``nodes`` (default 1) and ``time_limit`` (default: the duration, a perfect estimate) are optional.

Offered load of a trace on a cluster = memory-slice-seconds asked (memory slices x count x nodes x duration,
summed over jobs) / (the cluster's memory slices x the arrival span). The generators place arrivals in a span
chosen so that this is exactly the load asked for.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Iterable, List, Optional, Sequence, Tuple

from slurm_gpu.core.catalog import GpuModel, load_catalog
from slurm_gpu.core.errors import BadInputError, RequestError
from slurm_gpu.core.gres import parse_term
from slurm_gpu.core.requests import parse_gres, resolve

__all__ = [
    "TraceJob",
    "GENERATORS",
    "MIXES",
    "read_trace",
    "write_trace",
    "parse_job_gres",
    "generate",
    "offered_load",
    "normalise_type",
]


@dataclass(frozen=True)
class TraceJob:
    id: str
    submit: float
    duration: float
    gres: str
    nodes: int = 1
    time_limit: Optional[float] = None

    @property
    def limit(self) -> float:
        return self.time_limit if self.time_limit is not None else self.duration

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {
            "id": self.id,
            "submit": round(self.submit, 1),
            "duration": round(self.duration, 1),
            "gres": self.gres,
        }
        if self.nodes != 1:
            out["nodes"] = self.nodes
        if self.time_limit is not None:
            out["time_limit"] = round(self.time_limit, 1)
        return out


# -- the format ----------------------------------------------------------------------------------------
_MEMORY_KEY = re.compile(r"^\d+gb$")  # the key parse_job_gres gives a memory-sized request
_SITE_TYPE = re.compile(r"^[a-z][a-z0-9_.+-]*$")
# Slurm's AutoDetect=nvml names a MIG type <gpu name>_<profile>: nvidia_h100_80gb_hbm3_3g.40gb
_AUTODETECTED_MIG = re.compile(r"^[a-z0-9_-]+_(\d+g\.\d+gb(?:[+-][a-z]+(?:\.[a-z]+)?)?)$")


def normalise_type(gpu_type: str) -> str:
    """One spelling per profile: Slurm's autodetected ``nvidia_h100_80gb_hbm3_3g.40gb`` is ``3g.40gb``.

    >>> normalise_type("nvidia_h100_80gb_hbm3_3g.40gb"), normalise_type("1g.10gb"), normalise_type("a100")
    ('3g.40gb', '1g.10gb', 'a100')
    """
    m = _AUTODETECTED_MIG.match(gpu_type)
    return m.group(1) if m else gpu_type


def parse_job_gres(text: str) -> Tuple[str, int]:
    """``gpu:3g.40gb:2`` -> (``3g.40gb``, 2); ``gpu:2`` -> (``gpu``, 2): whole GPUs; ``gpu:20gb`` -> ``20gb``

    One gpu request in any spelling :func:`slurm_gpu.core.requests.parse_gres` reads; memory sizes become
    ``<N>gb`` keys (whole GiB), Slurm's autodetected MIG type names their profile. The request key is
    resolved per GPU model by the simulator (whole GPU: the model's full profile; a GPU type such as
    ``a100``: whole GPUs of the models it names).
    """
    try:
        reqs = parse_gres(text)
    except RequestError as exc:
        site = _site_type(text)
        if site is None:
            raise BadInputError(f"gres {text!r}: {exc}", part=text) from None
        if site[0] != normalise_type(site[0]):  # an autodetected MIG name: read it as its profile
            return parse_job_gres(f"gpu:{normalise_type(site[0])}:{site[1]}")
        return site  # a site's GPU type (gpu:a100:2); the simulator resolves it per model or rejects it
    if len(reqs) != 1 or reqs[0].name != "gpu":
        raise BadInputError(
            f"gres {text!r}: expected one gpu request, gpu:<profile>[:N], gpu:N or gpu:<size>gb[:N]",
            part=text,
        )
    req = reqs[0]
    if req.type is not None:
        return normalise_type(req.type), req.count
    if req.min_memory_mib is None:
        return "gpu", req.count
    if req.min_memory_mib % 1024:
        raise BadInputError(f"gres {text!r}: a trace gives memory sizes in whole gb", part=text)
    return f"{req.min_memory_mib // 1024}gb", req.count


def _site_type(text: str) -> Optional[Tuple[str, int]]:
    """``(type, count)`` of a single ``gpu:<type>[:N]`` whose type is no profile or size (``a100``,
    ``nvidia_h100_80gb_hbm3_3g.40gb``); None when the text is not one."""
    try:
        term = parse_term(text.strip())
    except RequestError:
        return None
    if "," in text or term.name.lower() != "gpu" or not term.type or term.detail:
        return None
    gpu_type = term.type.lower()
    if not _SITE_TYPE.match(gpu_type) or not (term.count or "1").isdigit() or int(term.count or "1") < 1:
        return None
    return gpu_type, int(term.count or "1")


def _job_from(obj: object, where: str) -> TraceJob:
    if not isinstance(obj, dict):
        raise BadInputError(f"{where}: not a JSON object", part=where)
    unknown = set(obj) - {"id", "submit", "duration", "gres", "nodes", "time_limit"}
    missing = {"id", "submit", "duration", "gres"} - set(obj)
    if unknown or missing:
        raise BadInputError(
            f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}", part=where
        )
    try:
        job = TraceJob(
            id=str(obj["id"]),
            submit=float(obj["submit"]),
            duration=float(obj["duration"]),
            gres=str(obj["gres"]),
            nodes=int(obj.get("nodes", 1)),
            time_limit=None if obj.get("time_limit") is None else float(obj["time_limit"]),
        )
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: {exc}", part=where) from None
    if job.duration < 0 or job.nodes < 1 or not math.isfinite(job.submit) or (job.limit < job.duration):
        raise BadInputError(f"{where}: negative duration, nodes < 1 or time_limit below duration", part=where)
    parse_job_gres(job.gres)
    return job


def read_trace(path: str) -> List[TraceJob]:
    """All jobs of a JSON-lines trace, sorted by submit time (stable); blank and ``#`` lines are skipped."""
    jobs = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise BadInputError(f"{path}:{n}: not JSON ({exc})", part=f"{path}:{n}") from None
                jobs.append(_job_from(obj, f"{path}:{n}"))
    except OSError as exc:
        raise BadInputError(f"cannot read trace {path}: {exc}", part=path) from exc
    ids = set()
    for job in jobs:
        if job.id in ids:
            raise BadInputError(f"{path}: job id {job.id!r} repeats", part=job.id)
        ids.add(job.id)
    jobs.sort(key=lambda j: j.submit)
    return jobs


def write_trace(jobs: Iterable[TraceJob], out: IO[str]) -> int:
    n = 0
    for job in jobs:
        out.write(json.dumps(job.to_dict(), separators=(", ", ": ")) + "\n")
        n += 1
    return n


def _memory_slices(model: GpuModel, key: str) -> int:
    if key == "gpu":
        return model.full_profile().memory_slices
    if _MEMORY_KEY.match(key):
        return resolve(parse_gres(f"gpu:{key}")[0], model).memory_slices
    return model.profile(key).memory_slices


def offered_load(jobs: Sequence[TraceJob], model: GpuModel, total_slices: int) -> float:
    """Memory-slice-seconds asked / (total_slices x arrival span): every job's whole work, what the
    generators size ``--load`` by (``trace info`` reports it as ``offered_load_all_work``)."""
    if len(jobs) < 2:
        return 0.0
    work = 0.0
    for j in jobs:
        key, count = parse_job_gres(j.gres)
        work += _memory_slices(model, key) * count * j.nodes * j.duration
    span = max(j.submit for j in jobs) - min(j.submit for j in jobs)
    return work / (total_slices * span) if span > 0 else math.inf


# -- generators --------------------------------------------------------------------------------------------
# Weights over the model's base profiles sorted by (memory slices, compute slices), smallest first
# (H100: 1g.10gb, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb); models with fewer profiles use the first ones.
MIXES: Dict[str, Tuple[float, ...]] = {
    "balanced": (0.30, 0.10, 0.20, 0.20, 0.10, 0.10),
    "small": (0.45, 0.20, 0.25, 0.07, 0.02, 0.01),
    "large": (0.05, 0.05, 0.10, 0.35, 0.20, 0.25),
}


def _profiles_by_size(model: GpuModel) -> List[str]:
    base = sorted(model.base_profiles(), key=lambda p: (p.memory_slices, p.compute_slices))
    return [p.name for p in base]


def _sample_jobs(
    rng: random.Random, n: int, model: GpuModel, mix: Sequence[float], multi: float, median_s: float
) -> List[Tuple[str, int, float, float]]:
    """(profile, count, duration, time_limit) for n jobs."""
    names = _profiles_by_size(model)
    weights = list(mix[: len(names)])
    out = []
    for _ in range(n):
        name = rng.choices(names, weights)[0]
        count = 2 if rng.random() < multi else 1
        # log-normal run times (median ``median_s``), as in published GPU cluster traces
        duration = min(max(rng.lognormvariate(math.log(median_s), 0.8), 60.0), 8 * 3600.0)
        # users overestimate: limits 1.2-3x the run time, rounded up to 15 minutes
        limit = math.ceil(duration * rng.uniform(1.2, 3.0) / 900.0) * 900.0
        out.append((name, count, duration, limit))
    return out


def _span_for(
    jobs: Sequence[Tuple[str, int, float, float]], model: GpuModel, total_slices: int, load: float
) -> float:
    work = sum(model.profile(name).memory_slices * count * duration for name, count, duration, _ in jobs)
    return work / (total_slices * load)


def _uniform_times(rng: random.Random, n: int, span: float) -> List[float]:
    # n arrivals of a Poisson process conditioned on its count are uniform over the span
    return sorted([0.0, span] + [rng.uniform(0.0, span) for _ in range(max(n - 2, 0))])[:n]


def _burst_times(
    rng: random.Random, n: int, span: float, mean_burst: float = 25.0, gap_s: float = 4.0
) -> Tuple[List[float], List[int]]:
    """Arrival times in bursts (array jobs, sweeps) and the burst index of each job."""
    times: List[float] = []
    burst_of: List[int] = []
    b = 0
    while len(times) < n:
        start = rng.uniform(0.0, span)
        size = 1 + int(rng.expovariate(1.0 / (mean_burst - 1)))
        t = start
        for _ in range(min(size, n - len(times))):
            times.append(min(t, span))
            burst_of.append(b)
            t += rng.expovariate(1.0 / gap_s)
        b += 1
    order = sorted(range(n), key=lambda i: times[i])
    return [times[i] for i in order], [burst_of[i] for i in order]


def _cycle_times(rng: random.Random, n: int, span: float, period: float, amplitude: float) -> List[float]:
    # thinning: accept t with probability proportional to 1 + A sin(2 pi t / P); busy in the "day"
    out: List[float] = []
    while len(out) < n:
        t = rng.uniform(0.0, span)
        if rng.random() * (1 + amplitude) <= 1 + amplitude * math.sin(2 * math.pi * t / period):
            out.append(t)
    return sorted(out)


GENERATORS = ("steady", "bursty", "mostly-large", "mostly-small", "daynight")


def generate(
    kind: str,
    n_jobs: int,
    model: GpuModel,
    total_slices: int,
    load: float = 0.9,
    seed: int = 1,
    mix: Optional[str] = None,
    multi: float = 0.1,
    median_s: float = 1800.0,
    period_s: float = 86400.0,
    amplitude: float = 0.7,
) -> List[TraceJob]:
    """A seeded trace of ``n_jobs`` at exactly ``load`` offered load on ``total_slices`` slices of ``model``.

    kinds: ``steady`` (Poisson arrivals), ``bursty`` (bursts of same-profile jobs), ``mostly-large``,
    ``mostly-small`` (steady arrivals, skewed mixes), ``daynight`` (arrival rate 1 + A sin(2 pi t / period)).
    """
    if kind not in GENERATORS:
        raise BadInputError(f"unknown trace generator {kind!r} (known: {', '.join(GENERATORS)})", part=kind)
    if n_jobs < 2 or not 0 < load <= 10:
        raise BadInputError("need at least 2 jobs and 0 < load <= 10", part=f"{n_jobs}/{load}")
    mix_name = mix or {"mostly-large": "large", "mostly-small": "small"}.get(kind, "balanced")
    if mix_name not in MIXES:
        raise BadInputError(f"unknown mix {mix_name!r} (known: {', '.join(MIXES)})", part=mix_name)
    rng = random.Random(f"{kind}:{seed}")  # noqa: S311 - reproducible traces, not secrets
    specs = _sample_jobs(rng, n_jobs, model, MIXES[mix_name], multi, median_s)
    span = _span_for(specs, model, total_slices, load)
    if kind == "bursty":
        times, burst_of = _burst_times(rng, n_jobs, span)
        # a burst is one user's sweep: one profile for the whole burst
        first: Dict[int, Tuple[str, int]] = {}
        specs = [(*first.setdefault(b, (s[0], s[1])), s[2], s[3]) for s, b in zip(specs, burst_of)]
        span = _span_for(specs, model, total_slices, load)
        scale = span / (times[-1] - times[0]) if times[-1] > times[0] else 1.0
        times = [(t - times[0]) * scale for t in times]
    elif kind == "daynight":
        times = _cycle_times(rng, n_jobs, span, period_s, amplitude)
        times = [t - times[0] for t in times]
        times[-1] = max(times[-1], span)  # exact load: the span is fixed by the work
    else:
        times = _uniform_times(rng, n_jobs, span)
    return [
        TraceJob(str(i + 1), t, d, f"gpu:{name}:{count}", 1, lim)
        for i, (t, (name, count, d, lim)) in enumerate(zip(times, specs))
    ]


# sacct: slurm_gpu.simulate.sacct (from_sacct, convert)
def default_model(key: str = "H100-80GB") -> GpuModel:
    return load_catalog().model(key)


def read_lines(path: str) -> List[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc}", part=path) from exc
