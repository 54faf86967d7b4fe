"""The hook server (``slurm-gpu-hook serve``) as the Prolog and Epilog use it: requests over its socket, the
client's environment and streams in the served hook, the fallbacks to an in-process hook, and what it
refuses. The real-cluster suite runs every job's hooks through it (the local cluster starts one)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.hooks import client

REPO = Path(__file__).resolve().parents[2]
AGENT = "slurm_gpu.node.agent"


@pytest.fixture
def node(tmp_path):
    """A configured simulated node whose controller cannot be asked: a prolog fails at its Slurm read,
    after the configuration, driver and journal were built, with its log line (naming the node) on stderr."""
    state = tmp_path / "gpus.json"
    simstate.init_state(str(state), [("H100-80GB", 2)], sandbox=str(tmp_path / "sb"))
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {state}\n"
                      f"  sim_sandbox: {tmp_path / 'sb'}\nstate_dir: {tmp_path / 'state'}\n"
                      f"slurm:\n  bin_dir: {tmp_path / 'no-slurm'}\n")
    return tmp_path, str(config)


def _clean_env():
    """This process's environment without Slurm's and Python's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYTHON"))}


def _env(tmp_path, config, sock, **extra):
    env = _clean_env()
    env.update(SLURM_GPU_CONFIG=config, SLURM_GPU_HOOK_SOCKET=str(sock), SLURMD_NODENAME="n1",
               SLURM_JOB_UID=str(os.getuid()), SLURM_JOB_GID=str(os.getgid()), **extra)
    return env


class Server:
    def __init__(self, sock: Path, env, cwd=REPO, pythonpath=None):
        self.sock = sock
        env = dict(env)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.log = open(sock.parent.parent / "server.log", "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "slurm_gpu.hooks.entry", "serve", "--socket",
                                      str(sock)], env=env, cwd=cwd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.02)

    def text(self):
        self.log.flush()
        return (self.sock.parent.parent / "server.log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def server(node):
    tmp, config = node
    srv = Server(tmp / "run" / "hooks.sock", _env(tmp, config, "none"))
    yield srv
    srv.stop()


IMPORTED = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('AGENT %s\\n' % ('" + AGENT + "' in sys.modules)))\n"
            "from slurm_gpu.hooks.entry import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def hook(env, *args, cwd=REPO):
    """A hook process as Slurm starts it; its stderr ends with whether it imported the node agent."""
    return subprocess.run([sys.executable, "-c", IMPORTED, *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_a_served_hook_runs_in_the_server_with_the_clients_environment_and_streams(node, server):
    tmp, config = node
    for name in ("n41", "n42"):
        env = _env(tmp, config, server.sock, SLURM_JOB_ID="41")
        env["SLURMD_NODENAME"] = name
        proc = hook(env, "prolog")
        # The hook ran (it reached the Slurm read as this request's node, and said so on this stderr) and
        # its exit status came back, yet this process never imported the node agent: the server ran it.
        assert proc.returncode == 1, proc.stderr
        assert f'"node":"{name}"' in proc.stderr and "no-slurm" in proc.stderr, proc.stderr
        assert f'"served_by":{server.proc.pid}' in proc.stderr
        assert proc.stderr.rstrip().endswith("AGENT False"), proc.stderr
    assert server.proc.poll() is None


def test_without_a_server_the_hook_runs_in_its_own_process(node):
    tmp, config = node
    for sock in (tmp / "nothing-here.sock", "none", ""):
        proc = hook(_env(tmp, config, sock, SLURM_JOB_ID="43"), "prolog")
        assert proc.returncode == 1 and "no-slurm" in proc.stderr and "served_by" not in proc.stderr
        assert proc.stderr.rstrip().endswith("AGENT True"), proc.stderr


def test_usage_errors_and_help_never_reach_the_server(node, server):
    tmp, config = node
    env = _env(tmp, config, server.sock)
    assert hook(env, "--socket", "x", "prolog").returncode == 2
    assert hook(env, "serve", "--config", "x").returncode == 2
    out = hook(env, "--help")
    assert out.returncode == 0 and "slurm-gpu-hook serve" in out.stdout and "Examples" in out.stdout


def test_many_hooks_at_once_are_each_served(node, server):
    tmp, config = node
    procs = [subprocess.Popen([sys.executable, "-m", "slurm_gpu.hooks.entry", "prolog"],
                              env=_env(tmp, config, server.sock, SLURM_JOB_ID=str(100 + i)),
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "no-slurm" in err, err


def test_another_install_or_a_malformed_request_gets_no_status_and_the_server_goes_on(node, server):
    tmp, config = node
    request = client.encode_request("prolog", None, b"/", 0o22, [], {b"SLURM_JOB_ID": b"7"}, "/elsewhere@0")
    assert client._exchange(str(server.sock), request, []) == client.STALE + b"\n"
    for bad in (b"GET / HTTP/1.0\n\n", client.PROTOCOL + b"\n5\nab", request.replace(b"prolog", b"reboot")):
        assert client._exchange(str(server.sock), bad, []) == b""
    proc = hook(_env(tmp, config, server.sock, SLURM_JOB_ID="44"), "prolog")
    assert "no-slurm" in proc.stderr and proc.stderr.rstrip().endswith("AGENT False"), proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_only_the_servers_own_user_is_served(node):
    tmp, config = node
    base = Path(tempfile.mkdtemp(prefix="sg-hooks-"))  # pytest's tmp is private to root: not reachable
    try:
        os.chmod(base, 0o755)
        srv = Server(base / "run" / "hooks.sock", _env(tmp, config, "none"))
        assert oct(srv.sock.stat().st_mode & 0o777) == "0o600"
        assert oct(srv.sock.parent.stat().st_mode & 0o777) == "0o700"
        # Opened up by hand, the socket still serves nobody but root: the peer's uid is checked.
        os.chmod(srv.sock.parent, 0o755)
        os.chmod(srv.sock, 0o666)
        probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
                 "try:\n    s.sendall(b'x')\n    print(repr(s.recv(64)))\n"
                 "except (ConnectionResetError, BrokenPipeError):\n    print(repr(b''))\n")
        out = subprocess.run(["/usr/bin/python3", "-c", probe, str(srv.sock)], user=65534,
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "b''", out.stderr
        srv.stop()
    finally:
        shutil.rmtree(base)


def test_a_second_server_on_the_same_socket_is_refused_and_sigterm_removes_it(node, server):
    tmp, config = node
    second = subprocess.run([sys.executable, "-m", "slurm_gpu.hooks.entry", "serve", "--socket",
                             str(server.sock)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert second.returncode != 0 and "another hook server" in second.stderr
    server.stop()
    assert server.proc.returncode == 0 and not server.sock.exists()


def test_a_server_whose_package_changed_starts_anew_on_the_new_code(node, tmp_path):
    tmp, config = node
    copy = tmp_path / "site"
    shutil.copytree(REPO / "slurm_gpu", copy / "slurm_gpu", ignore=shutil.ignore_patterns("__pycache__"))
    sock = tmp / "run2" / "hooks.sock"
    env = _env(tmp, config, sock, SLURM_JOB_ID="45", PYTHONPATH=str(copy))
    srv = Server(sock, env, cwd=tmp_path, pythonpath=str(copy))
    try:
        first = srv.proc.pid
        assert hook(env, "prolog", cwd=tmp_path).stderr.rstrip().endswith("AGENT False")
        dispatch = copy / "slurm_gpu" / "hooks" / "dispatch.py"
        os.utime(dispatch, ns=(time.time_ns(), time.time_ns()))  # an upgrade in place
        stale = hook(env, "prolog", cwd=tmp_path)
        assert "no-slurm" in stale.stderr and stale.stderr.rstrip().endswith("AGENT True"), stale.stderr
        deadline = time.monotonic() + 30
        while "starting anew" not in srv.text() or not sock.exists():
            assert time.monotonic() < deadline, srv.text()
            time.sleep(0.05)
        assert srv.proc.pid == first and srv.proc.poll() is None  # the same process, executed anew
        assert hook(env, "prolog", cwd=tmp_path).stderr.rstrip().endswith("AGENT False")
    finally:
        srv.stop()


def _children(pid):
    """The live child processes of ``pid``."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(p) for p in f.read().split()]
    out = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(kid)
        except FileNotFoundError:
            pass
    return out


def _wait_for(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_spare_child_serves_the_next_hook_and_a_dead_one_is_replaced(node, server):
    tmp, config = node
    env = _env(tmp, config, server.sock, SLURM_JOB_ID="46")
    _wait_for(lambda: len(_children(server.proc.pid)) == 1, "no spare child waits for the first request")
    spare = _children(server.proc.pid)[0]
    served = hook(env, "prolog")
    assert f'"served_by":{server.proc.pid}' in served.stderr, served.stderr
    # it ran the hook and goes: the client returns on the answer, which comes before the child's exit
    _wait_for(lambda: spare not in _children(server.proc.pid), "the spare that ran the hook did not exit")
    _wait_for(lambda: len(_children(server.proc.pid)) == 1, "no new spare after the first request")
    os.kill(_children(server.proc.pid)[0], signal.SIGKILL)  # a spare gone (OOM killer, an admin)
    again = hook(env, "prolog")
    assert f'"served_by":{server.proc.pid}' in again.stderr, again.stderr  # served by a child forked for it
    assert again.stderr.rstrip().endswith("AGENT False"), again.stderr
    _wait_for(lambda: len(_children(server.proc.pid)) == 1, "no spare after a dead one")
    last = _children(server.proc.pid)[0]
    server.stop()
    _wait_for(lambda: not os.path.exists(f"/proc/{last}/cmdline"), "the spare outlived its server")


STAND_IN = """#!/bin/sh
# scontrol/squeue for one running job (42, one 1g.10gb) on node n1 under count admission; an update of the
# node's counts takes a second and is recorded
case "$1 $2" in
  "--version ") echo "slurm 24.11.5" ;;
  "show job")
    printf '{{"jobs":[{{"job_id":42,"job_state":["RUNNING"],"user_id":{uid},"nodes":"n1",'
    printf '"admin_comment":"slurm-gpu:gpu:1g.10gb:1","tres_per_node":"gres/migp:1g.10gb:1",'
    printf '"gres_detail":["migp:1g.10gb(CNT:1)"]}}]}}\\n' ;;
  "show node") printf 'NodeName=n1\\n   Gres=migp:1g.10gb:1\\n   GresUsed=migp:1g.10gb:1\\n' ;;
  "update nodename=n1") sleep 1; echo "$3" >> {updates} ;;
esac
exit 0
"""


def _counts_node(tmp_path, gpus, slow_updates=True):
    """A simulated node of ``gpus`` H100s under count admission, Slurm the stand-in above (its count
    updates instant unless ``slow_updates``); returns (state file, configuration file, updates file)."""
    state = tmp_path / "gpus.json"
    simstate.init_state(str(state), [("H100-80GB", gpus)], sandbox=str(tmp_path / "sb"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    updates = tmp_path / "updates"
    stand_in = STAND_IN if slow_updates else STAND_IN.replace("sleep 1; ", "")
    for tool in ("scontrol", "squeue"):
        (bin_dir / tool).write_text(stand_in.format(uid=os.getuid(), updates=updates))
        (bin_dir / tool).chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {state}\n"
                      f"  sim_sandbox: {tmp_path / 'sb'}\nstate_dir: {tmp_path / 'state'}\n"
                      f"slurm:\n  bin_dir: {bin_dir}\nadmission:\n  mode: counts\n")
    return state, config, updates


def test_a_served_epilog_answers_before_it_re_plans_the_node(tmp_path):
    state, config, updates = _counts_node(tmp_path, 1)
    sock = tmp_path / "run" / "hooks.sock"
    env = _env(tmp_path, str(config), sock, SLURM_JOB_ID="42")
    srv = Server(sock, _env(tmp_path, str(config), "none"))
    try:
        prolog = hook(env, "prolog")
        assert prolog.returncode == 0 and prolog.stderr.rstrip().endswith("AGENT False"), prolog.stderr
        t0 = time.monotonic()
        epilog = hook(env, "epilog")
        took = time.monotonic() - t0
        assert epilog.returncode == 0 and epilog.stderr.rstrip().endswith("AGENT False"), epilog.stderr
        log = tmp_path / "state" / "hooks.log"
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        # slurmd had its answer once the instance was gone and the epilog's line written ...
        epi = [x for x in lines if x["hook"] == "epilog"]
        assert len(epi) == 1 and epi[0]["action"] == "released" and "capacity_updates" not in epi[0], epi
        assert took < 1.0 and epi[0]["seconds"] < 1.0, (took, epi)
        # ... the node's counts were re-planned after that (each update takes the stand-in a second)
        _wait_for(lambda: '"hook":"replan"' in log.read_text(), "the re-plan's log line never came", 60)
        replan = [json.loads(x) for x in log.read_text().splitlines() if '"hook":"replan"' in x]
        assert len(replan) == 1 and replan[0]["job_id"] == "42" and replan[0]["problems"] == [], replan
        assert replan[0]["capacity_updates"] >= 1 and replan[0]["seconds"] >= 1.0, replan
        assert len(updates.read_text().splitlines()) == replan[0]["capacity_updates"]
        assert not open_driver("sim", sim_state=str(state)).instances()
    finally:
        srv.stop()


# In a process prepared as the server prepares itself: a prolog and an epilog, then what they imported and
# whether they parsed the mig-minors file anew (the server's parse is what a served hook should use).
SERVED_ALIKE = """
import json, sys
from slurm_gpu.devices import migminors
from slurm_gpu.hooks.dispatch import run_hook
from slurm_gpu.hooks.server import preload

preload()
before, parses = set(sys.modules), dict(migminors._parsed)
codes = [run_hook("prolog"), run_hook("epilog")]
print(json.dumps({"codes": codes, "imported": sorted(set(sys.modules) - before),
                  "parsed_anew": sorted(p for p, t in migminors._parsed.items() if parses.get(p) is not t),
                  "preparsed": sorted(parses)}))
"""


def test_a_hook_in_a_prepared_server_imports_nothing_and_reuses_its_mig_minors_parse(tmp_path):
    _, config, _ = _counts_node(tmp_path, 2, slow_updates=False)
    env = _env(tmp_path, str(config), "none", SLURM_JOB_ID="42")
    proc = subprocess.run([sys.executable, "-c", SERVED_ALIKE], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    log = (tmp_path / "state" / "hooks.log").read_text()
    assert out["codes"] == [0, 0] and '"action":"created"' in log and '"action":"released"' in log, log
    assert out["imported"] == [], out  # each would be imported anew by every served hook
    assert out["preparsed"] == [str(tmp_path / "sb" / "mig-minors")] and out["parsed_anew"] == [], out


def test_the_hook_bench_traces_where_a_served_childs_time_goes():
    env = _clean_env()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_hooks.py"), "--trace", "--jobs", "4"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "prolog: where a served child's time goes, medians of 4 jobs" in out, out
    assert "epilog: where a served child's time goes, medians of 4 jobs" in out, out
    prolog, epilog = out.split("epilog: ")
    times = {line[:64].strip(): float(line.split()[-2]) for line in prolog.splitlines() if line[:2] == "  "}
    whole = "the child until its answer (what slurmd waits for)"
    for step in (whole, "create (GPU and compute instance)", "GPUs and profile table, during the job read",
                 "journalled intent", "journalled result"):
        assert times.get(step, 0) > 0, (step, out)
    assert times["create (GPU and compute instance)"] < times[whole]
    assert "destroy" in epilog and "create" not in epilog, out


def test_the_alternating_hook_bench_compares_two_installs():
    env = _clean_env()
    # one install against itself: what is checked is that both servers serve and the report is whole
    cmd = [sys.executable, str(REPO / "bench" / "bench_hooks_ab.py"), "--before", sys.executable,
           "--after", sys.executable, "--rounds", "1", "--jobs", "4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("4 jobs per hook and install, alternated"), proc.stdout
    for hook, line in zip(("prolog", "epilog"), lines[1:]):
        assert line.startswith(f"{hook}: before ") and "paired median" in line, line
        assert "in the child" in line, line
