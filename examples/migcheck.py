"""What a framework sees of the job's MIG instance, checked: exactly one device, of the expected size.

Shared by ``pytorch_mig.py`` and ``tensorflow_mig.py``; standard library only, so it runs in any image.
A MIG device of profile ``<g>g.<N>gb`` has about N GB of memory (drivers differ by a few per cent, so
sizes are never matched exactly) and CUDA names it ``<GPU name> MIG <g>g.<N>gb``.

>>> parse_profile("3g.40gb"), parse_profile("1g.10gb+me"), parse_profile("gpu:2g.20gb:1")
((3, 40.0), (1, 10.0), (2, 20.0))
>>> check([Device("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9984 * 2**20)], "1g.10gb", "MIG-5c3a")
[]
>>> check([], "1g.10gb", "MIG-5c3a")
['the framework sees no CUDA device (CUDA_VISIBLE_DEVICES=MIG-5c3a)']
"""

import json
import os
import re
from collections import namedtuple

Device = namedtuple("Device", "name memory_bytes")
_PROFILE = re.compile(r"(?:.*:)?(\d+)g\.(\d+(?:\.\d+)?)gb")
# Real MIG memory is 2-8 % above the nominal GB of the profile name (1g.10gb: 9984 MiB on H100).
LOW, HIGH = 0.90, 1.15


def parse_profile(text):
    """``(compute slices, nominal GB)`` of a profile name such as ``1g.10gb`` (or ``gpu:1g.10gb:1``)."""
    match = _PROFILE.match(text.strip())
    if not match:
        raise ValueError(f"not a MIG profile name: {text!r} (e.g. 1g.10gb)")
    return int(match.group(1)), float(match.group(2))


def check(devices, profile, visible):
    """Problems with what the framework sees (empty: exactly one device of ``profile``)."""
    if not devices:
        return [f"the framework sees no CUDA device (CUDA_VISIBLE_DEVICES={visible})"]
    if len(devices) != 1:
        return [f"the framework sees {len(devices)} devices, not 1: CUDA uses one MIG instance per process"]
    problems = []
    dev = devices[0]
    _, gb = parse_profile(profile)
    ratio = dev.memory_bytes / (gb * 1e9)
    if not LOW <= ratio <= HIGH:
        problems.append(f"{dev.name} has {dev.memory_bytes / 2**30:.1f} GiB, not what {profile} has")
    if "MIG" in dev.name and profile.split(":")[-1].split("+")[0] not in dev.name:
        problems.append(f"{dev.name} is not a {profile} instance")
    if not str(visible).startswith("MIG-"):
        problems.append(f"CUDA_VISIBLE_DEVICES={visible} is not a MIG UUID")
    return problems


def report(framework, version, devices, profile, environ=None):
    """Print what was seen as one JSON line; returns the exit status (0 ok, 1 wrong device)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    problems = check(devices, profile, visible)
    seen = {"framework": framework, "version": version, "profile": profile, "CUDA_VISIBLE_DEVICES": visible}
    for key in ("NVIDIA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_LOCALID"):
        seen[key] = env.get(key)
    seen.update(devices=[d._asdict() for d in devices], ok=not problems, problems=problems)
    print(json.dumps(seen))
    return 0 if not problems else 1
