"""``history.log``: one JSON line per finished job and per requeue or refusal, kept to about 1 MiB.

Written and read here only. The journal appends a ``released`` line when a record closes (before the
record goes: a crash repeats a line rather than losing one); the agent appends ``requeued``/``cancelled``
lines. A file over ``MAX_BYTES`` is rotated to ``history.log.1`` before the next line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Mapping, Tuple

from slurm_gpu.state.records import JobRecord

__all__ = ["History", "released_event", "MAX_BYTES"]

MAX_BYTES = 1 << 20


class History:
    def __init__(self, path: str):
        self.path = path

    def append(self, event: Mapping[str, Any]) -> None:
        """Append one line (``time`` added when missing). Raises OSError or StateError if it cannot."""
        from slurm_gpu.state.fsutil import append_line

        line = {"time": round(time.time(), 3), **event}
        try:
            if os.path.getsize(self.path) > MAX_BYTES:
                os.replace(self.path, self.path + ".1")
        except FileNotFoundError:
            pass
        append_line(self.path, json.dumps(line, sort_keys=True, separators=(",", ":")))

    def read(self) -> Tuple[Dict[str, Any], ...]:
        """The lines of the current file, oldest first; unreadable lines skipped."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return ()
        out = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return tuple(out)


def released_event(record: JobRecord) -> Dict[str, Any]:
    """The line of a job whose instances are all released."""
    return {
        "event": "released",
        "job_id": record.job_id,
        "uid": record.uid,
        "request": record.request,
        "boot_id": record.boot_id,
        "created": record.created,
        "instances": [
            {
                "gpu_index": i.planned.gpu_index,
                "profile_name": i.planned.profile_name,
                "start": i.planned.start,
                "mig_uuid": i.actual.mig_uuid if i.actual else None,
            }
            for i in record.instances
        ],
    }
