"""Slurm TaskProlog: print ``export CUDA_VISIBLE_DEVICES=MIG-<uuid>`` for this task. Runs per task.

Kept to the standard library's ``os``/``sys`` so that it starts in a few milliseconds; run it as a
script (``python3 -I -S .../task_prolog.py [STATE_DIR]``; ``{node}`` in STATE_DIR is replaced by
``SLURMD_NODENAME``). It reads ``<STATE_DIR>/tasks/<uid>/<job_id>``, which the Prolog left for the job's
user only (``slurm_gpu.state.task_env`` writes it), one MIG UUID per line. This file is the one statement of
what a task file may hold (``is_mig_uuid``): the writer checks with the same function.

Mapping: with n instances, the task with local id L (``SLURM_LOCALID``, 0 in the batch step) gets
instance L mod n, so ``srun -n4`` on a job with two instances puts tasks 0 and 2 on the first and tasks
1 and 3 on the second. ``SLURM_GPU_MIG_DEVICES`` lists all of the job's UUIDs, comma-separated.
``NVIDIA_VISIBLE_DEVICES`` gets the task's UUID too: container hooks (Enroot/Pyxis, the NVIDIA container
toolkit) read that one.

Heterogeneous jobs: every component's tasks see the leader's ``SLURM_JOB_ID``; the component's own job id
is one of ``SLURM_JOB_ID_HET_GROUP_<k>``: the one with a task file on this node, and where several have
one, the one whose node list is this task's ``SLURM_JOB_NODELIST``.

A task without instances gets none, and loses any of ours it inherited (srun copies the batch step's
environment, so a het component or a GPU-less step would otherwise see another component's UUID).
"""

import os
import sys

# Run as a script (sys.path[0] is this folder): the package's parent goes first, so that the task file's
# format comes from the installed package itself.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from slurm_gpu.core.errors import StateError  # noqa: E402
from slurm_gpu.state import task_env  # noqa: E402

DEFAULT_STATE_DIR = "/var/lib/slurm-gpu"


def _read(path):
    """UUIDs of a task file; None when there is none; a message string when it is unusable."""
    try:
        return task_env.read_uuids(path)
    except StateError as exc:
        return str(exc)


def _candidates(environ):
    """``(job_id, on_my_node_list)`` this task may belong to: every het component, else SLURM_JOB_ID."""
    nodes = environ.get("SLURM_JOB_NODELIST", "")
    het = []
    for key, value in environ.items():
        if key.startswith("SLURM_JOB_ID_HET_GROUP_") and task_env.is_job_id(value):
            group = key[len("SLURM_JOB_ID_HET_GROUP_"):]
            het.append((value, environ.get(f"SLURM_JOB_NODELIST_HET_GROUP_{group}") == nodes))
    if het:
        return het
    own = environ.get("SLURM_JOB_ID", "")
    return [(own, True)] if task_env.is_job_id(own) else []


def lines(environ, state_dir, uid=None):
    # One state directory per node when several slurmd share a host (config's "{node}"): only the het
    # components with instances on this node have a file here.
    state_dir = state_dir.replace("{node}", environ.get("SLURMD_NODENAME", ""))
    uid = os.getuid() if uid is None else uid
    found = []
    for job_id, mine in _candidates(environ):
        got = _read(os.path.join(state_dir, task_env.TASKS_DIR, str(int(uid)), job_id))
        if isinstance(got, str):
            return [f"print slurm-gpu: {got}"]
        if got is not None:
            found.append((got, mine))
    several = len(found) > 1
    if several:
        found = [f for f in found if f[1]]
    if len(found) != 1:
        # Nothing of ours here, or two het components on this node with no way to tell which this is.
        inherited = environ.get("SLURM_GPU_MIG_DEVICES", "").split(",")
        out = []
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            if environ.get(name) in inherited:
                out.append(f"unset {name}")
        if "SLURM_GPU_MIG_DEVICES" in environ:
            out.append("unset SLURM_GPU_MIG_DEVICES")
        if several:
            out.append("print slurm-gpu: several components of this heterogeneous job have MIG devices "
                       "on this node; none is set for this task")
        return out
    uuids = found[0][0]
    local = environ.get("SLURM_LOCALID", "0")
    index = int(local) % len(uuids) if local.isdigit() and local.isascii() else 0
    return [f"export CUDA_VISIBLE_DEVICES={uuids[index]}", f"export SLURM_GPU_MIG_DEVICES={','.join(uuids)}",
            f"export NVIDIA_VISIBLE_DEVICES={uuids[index]}"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = lines(os.environ, argv[0] if argv else DEFAULT_STATE_DIR)
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
