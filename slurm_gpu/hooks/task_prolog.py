"""Slurm TaskProlog: print ``export CUDA_VISIBLE_DEVICES=MIG-<uuid>`` for this task. Runs per task.

Kept to the standard library's ``os``/``sys`` so that it starts in a few milliseconds; run it as a
script (``python3 -I -S .../task_prolog.py [STATE_DIR]``; ``{node}`` in STATE_DIR is replaced by
``SLURMD_NODENAME``). It reads ``<STATE_DIR>/tasks/<SLURM_JOB_ID>``,
which the Prolog left readable by the job's user only, one MIG UUID per line.

Mapping: with n instances, the task with local id L (``SLURM_LOCALID``, 0 in the batch step) gets
instance L mod n, so ``srun -n4`` on a job with two instances puts tasks 0 and 2 on the first and tasks
1 and 3 on the second. ``SLURM_GPU_MIG_DEVICES`` lists all of the job's UUIDs, comma-separated.
A job without MIG instances (no file) gets nothing.
"""

import os
import sys

DEFAULT_STATE_DIR = "/var/lib/slurm-gpu"
_OK = set("ABCDEFabcdef0123456789-/MIGU")


def lines(environ, state_dir):
    # One state directory per node when several slurmd share a host (config's "{node}").
    state_dir = state_dir.replace("{node}", environ.get("SLURMD_NODENAME", ""))
    job_id = environ.get("SLURM_JOB_ID", "")
    if not job_id.replace("_", "").isdigit():
        return []
    try:
        with open(os.path.join(state_dir, "tasks", job_id), encoding="ascii") as fh:
            uuids = [u.strip() for u in fh.read().split() if u.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        return [f"print slurm-gpu: cannot read the job's MIG devices: {exc}"]
    # Only UUID characters go into the TaskProlog protocol.
    uuids = [u for u in uuids if u.startswith("MIG-") and set(u) <= _OK]
    if not uuids:
        return []
    local = environ.get("SLURM_LOCALID", "0")
    index = int(local) % len(uuids) if local.isdigit() else 0
    return [f"export CUDA_VISIBLE_DEVICES={uuids[index]}", f"export SLURM_GPU_MIG_DEVICES={','.join(uuids)}"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = lines(os.environ, argv[0] if argv else DEFAULT_STATE_DIR)
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
