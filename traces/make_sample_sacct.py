"""Writes traces/sample-sacct.txt: a made-up site of 4 nodes x 8 H100-80GB that hands out whole GPUs.

400 jobs over about a day (Poisson arrivals, mean gap 210 s; log-normal run times, median 40 min): 70 %
one GPU with a recorded GPU memory peak spread over 2-76 GB, 15 % two GPUs, 5 % 8 GPUs on 2 nodes,
6 % gres/shard jobs, 4 % CPU only. Each job has a batch step and, when it used a GPU, a step whose
TRESUsageInMax carries gres/gpumem, as `sacct -P -a -o ...,TRESUsageInMax` prints them. Seeded:

    python3 traces/make_sample_sacct.py > traces/sample-sacct.txt
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

HEAD = "JobID|Submit|Start|End|ReqTRES|AllocTRES|NNodes|Timelimit|AdminComment|TRESUsageInMax"


def _fmt(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S")


def _limit(rng: random.Random, seconds: float) -> str:
    s = int(math.ceil(seconds * rng.uniform(1.3, 3) / 900) * 900)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    return (f"{d}-" if d else "") + f"{h:02d}:{s // 60:02d}:00"


def main() -> None:
    rng = random.Random(14)  # noqa: S311 - a reproducible sample, not a secret
    t0 = datetime(2024, 5, 6, 8, 0, 0)
    rows = [HEAD]
    t = 0.0
    for jid in range(5001, 5401):
        t += rng.expovariate(1 / 210.0)
        dur = min(max(rng.lognormvariate(math.log(2400), 0.9), 120), 12 * 3600)
        sub = t0 + timedelta(seconds=t)
        start = sub + timedelta(seconds=rng.uniform(5, 600))  # the site's own queue; a replay ignores it
        end = _fmt(start + timedelta(seconds=dur))
        r = rng.random()
        nodes, peak = 1, None
        if r < 0.70:
            gpus = 1
            bands = [rng.uniform(2, 9), rng.uniform(9, 19), rng.uniform(19, 38), rng.uniform(40, 76)]
            peak = rng.choice(bands)
        elif r < 0.85:
            gpus, peak = 2, rng.uniform(10, 70)
        elif r < 0.90:
            gpus, peak, nodes = 8, rng.uniform(50, 78), 2
        elif r < 0.96:
            gpus = 0  # gres/shard
        else:
            gpus = -1  # CPU only
        if gpus < 0:
            tres = "billing=4,cpu=4,mem=16G,node=1"
        elif gpus == 0:
            tres = f"billing=1,cpu=2,gres/shard={rng.choice([1, 2, 3])},mem=8G,node=1"
        else:
            tres = f"billing={gpus * 8},cpu={gpus * 8},gres/gpu={gpus},mem={gpus * 64}G,node={nodes}"
        rows.append(f"{jid}|{_fmt(sub)}|{_fmt(start)}|{end}|{tres}|{tres}|{nodes}|{_limit(rng, dur)}||")
        rows.append(f"{jid}.batch|{_fmt(start)}|{_fmt(start)}|{end}||cpu=1|1|||cpu=00:00:02,mem=12M")
        if peak is not None:
            usage = (f"cpu=00:{rng.randint(10, 59)}:00,gres/gpumem={int(peak * 1024)}M,"
                     f"gres/gpuutil={rng.randint(20, 100)},mem=9G")
            rows.append(f"{jid}.0|{_fmt(start)}|{_fmt(start)}|{end}||{tres}|{nodes}|||{usage}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
