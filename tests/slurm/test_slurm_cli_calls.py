"""How the Slurm adapter calls the tools: ``scontrol --version`` asked once per ``scontrol`` file, not
once per hook process (an upgraded one is asked again); a node read started early runs alongside the
caller and is read (or waited for) later, never left behind."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from slurm_gpu.slurm.client import SlurmCli


def _scontrol(bin_dir, version):
    """A stand-in ``scontrol`` that answers ``--version`` and counts how often it was asked."""
    path = bin_dir / "scontrol"
    path.write_text(f"#!/bin/sh\necho asked >> {bin_dir}/calls\necho 'slurm {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _calls(bin_dir):
    calls = bin_dir / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_the_version_is_asked_once_per_scontrol_file(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _scontrol(bin_dir, "24.11.5")
    cache = str(tmp_path / "slurm-version.json")
    assert SlurmCli(str(bin_dir), version_cache=cache).version() == (24, 11)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    for _ in range(3):  # three more hook processes
        assert SlurmCli(str(bin_dir), version_cache=cache).version() == (24, 11)
    assert _calls(bin_dir) == 1
    # An upgrade replaces the file: asked again, and the new answer kept.
    (bin_dir / "scontrol").unlink()
    _scontrol(bin_dir, "26.05.5")
    assert SlurmCli(str(bin_dir), version_cache=cache).version() == (26, 5)
    assert SlurmCli(str(bin_dir), version_cache=cache).version() == (26, 5)
    assert _calls(bin_dir) == 2
    # Without a cache (or with one that cannot be written or read) every process asks.
    assert SlurmCli(str(bin_dir)).version() == (26, 5)
    (tmp_path / "slurm-version.json").write_text("{not json")
    assert SlurmCli(str(bin_dir), version_cache=cache).version() == (26, 5)
    assert SlurmCli(str(bin_dir), version_cache=str(tmp_path / "absent" / "v.json")).version() == (26, 5)
    assert _calls(bin_dir) == 5


NODE = """#!/bin/sh
# scontrol show node -d <node>: says it started, answers after a moment
touch {started}
sleep 0.3
printf 'NodeName=n1 Arch=x86_64\\n   Gres=migp:1g.10gb:7\\n   GresUsed=migp:1g.10gb:2\\n'
"""


def _stand_in(tmp_path, script: str) -> str:
    """A bin directory whose ``scontrol`` is ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(script)
    (bin_dir / "scontrol").chmod(0o755)
    return str(bin_dir)


def test_a_started_node_read_runs_alongside_and_is_read_later(tmp_path):
    started = tmp_path / "started"
    cli = SlurmCli(_stand_in(tmp_path, NODE.format(started=started)))
    t0 = time.monotonic()
    result = cli.node_gres_started("n1")
    assert time.monotonic() - t0 < 0.2  # returned at once: scontrol runs while the caller reads the GPUs
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, "scontrol was not started by node_gres_started"
        time.sleep(0.01)
    configured, used = result()
    assert [(g.type, g.count) for g in configured] == [("1g.10gb", 7)]
    assert [(g.type, g.count) for g in used] == [("1g.10gb", 2)]


def test_a_started_read_nothing_used_is_waited_for(tmp_path):
    from slurm_gpu.node.publish import CountPublisher

    publisher = CountPublisher(SlurmCli(_stand_in(tmp_path, NODE.format(started=tmp_path / "started"))))
    with publisher.reading("n1"):
        pass  # a refusal: nothing placed, nothing read
    assert publisher._started is None
    # no scontrol of ours is left running, or ended and unreaped (a zombie keeps its name in stat)
    kids = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not [k for k in kids if "(scontrol)" in Path(f"/proc/{k}/stat").read_text()]


JOB = """#!/bin/sh
# scontrol 24.11: --version, and job 5 (a 1g.10gb job on n1); every show job is counted
case "$1 $2" in
  "--version ") echo "slurm 24.11.5" ;;
  "show job")
    echo asked >> {calls}
    printf '{{"jobs":[{{"job_id":5,"job_state":["RUNNING"],"user_id":1000,"nodes":"n1",'
    printf '"admin_comment":"slurm-gpu:gpu:1g.10gb:1","tres_per_node":"gres/migp:1g.10gb:1",'
    printf '"gres_detail":["migp:1g.10gb(CNT:1)"]}}]}}\\n' ;;
esac
"""


def test_a_started_job_read_is_the_next_read_of_that_job(tmp_path):
    calls = tmp_path / "calls"
    cli = SlurmCli(_stand_in(tmp_path, JOB.format(calls=calls)))
    cli.start_job(5)
    cli.start_job(5)  # once started, not again
    job = cli.job(5)
    assert (job.job_id, job.state, job.admin_comment) == (5, "RUNNING", "slurm-gpu:gpu:1g.10gb:1")
    assert len(calls.read_text().splitlines()) == 1
    assert cli.job(5).job_id == 5  # the started read is used once: a later read asks Slurm again
    assert len(calls.read_text().splitlines()) == 2
