"""The local cluster's accounting (``ClusterSpec.accounting``): its own MariaDB server and a real slurmdbd.

Nothing of the host's is used: the database lives under ``<dir>/db`` (``mariadb-install-db``, first start
only), listens on 127.0.0.1 at ``db_port(spec)`` and on its own socket; the root account stays the OS
root's (unix_socket authentication), and slurmdbd connects as a user of its own with a random password,
allowed only its own database. slurmdbd reads ``<dir>/etc/slurmdbd.conf`` (0600, next to slurm.conf) and
listens on ``dbd_port(spec)``. Debian 12's packages ``mariadb-server`` and ``slurmdbd``; no systemd.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from typing import List

from slurm_gpu.core.errors import SlurmError
from slurm_gpu.state.fsutil import atomic_write
from slurm_gpu.testbed.spec import ClusterSpec, db_port, dbd_port

__all__ = ["slurm_conf_lines", "start", "stop", "available", "register"]

DB_USER = "slurm"


def available() -> str:
    """Empty when this host can run the accounting, else what is missing."""
    for tool in ("mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "sacctmgr"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} not installed (scripts/setup.sh: mariadb-server, slurmdbd)"
    return ""


def _db_dir(spec: ClusterSpec) -> str:
    return os.path.join(spec.dir, "db")


def _socket(spec: ClusterSpec) -> str:
    return os.path.join(_db_dir(spec), "mysqld.sock")


def _database(spec: ClusterSpec) -> str:
    return f"acct_{spec.name}".replace("-", "_")


def slurm_conf_lines(spec: ClusterSpec) -> List[str]:
    """What slurm.conf says instead of ``AccountingStorageType=accounting_storage/none``."""
    return ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={dbd_port(spec)}", "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=30"]


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise SlurmError(available() or f"{name} not found")
    return path


def _wait(what: str, ready, timeout: float, log: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SlurmError(f"{what} did not start within {timeout:.0f} s (log: {log})")
        time.sleep(0.1)


def _sql(spec: ClusterSpec, statement: str) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("mariadb"), f"--socket={_socket(spec)}", "-u", "root", "-e", statement],
                          capture_output=True, text=True, timeout=30, check=False)


def _start_mariadb(spec: ClusterSpec) -> str:
    """Start the cluster's MariaDB (initialising it once); returns slurmdbd's password."""
    data = _db_dir(spec)
    fresh = not os.path.isdir(os.path.join(data, "mysql"))
    if fresh:
        os.makedirs(data, mode=0o700, exist_ok=True)
        proc = subprocess.run([_tool("mariadb-install-db"), "--user=root", f"--datadir={data}",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise SlurmError(f"mariadb-install-db failed: {proc.stderr.strip()[-400:]}")
    log = os.path.join(spec.dir, "log", "mariadb.log")
    with open(log, "ab") as out:
        subprocess.Popen(  # noqa: S603 - fixed argv
            [_tool("mariadbd"), "--no-defaults", "--user=root", f"--datadir={data}",
             f"--socket={_socket(spec)}", f"--port={db_port(spec)}", "--bind-address=127.0.0.1",
             f"--pid-file={data}/mariadb.pid", f"--log-error={log}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=64M"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _wait("MariaDB", lambda: _sql(spec, "SELECT 1").returncode == 0, 60, log)
    password = secrets.token_hex(16)
    user = f"'{DB_USER}'@'127.0.0.1'"
    grant = (f"CREATE USER IF NOT EXISTS {user}; ALTER USER {user} IDENTIFIED BY '{password}'; "
             f"GRANT ALL ON `{_database(spec)}`.* TO {user}; GRANT ALL ON `{_database(spec)}_%`.* TO {user}; "
             "FLUSH PRIVILEGES;")
    proc = _sql(spec, grant)
    if proc.returncode != 0:
        raise SlurmError(f"MariaDB user for slurmdbd: {proc.stderr.strip()}")
    return password


def _dbd_conf(spec: ClusterSpec, password: str) -> str:
    d = spec.dir
    return "\n".join([
        f"# slurmdbd of the local test cluster {spec.name}. Generated.",
        "AuthType=auth/munge",
        "DbdHost=localhost",
        f"DbdPort={dbd_port(spec)}",
        "SlurmUser=root",
        f"LogFile={d}/log/slurmdbd.log",
        f"PidFile={d}/db/slurmdbd.pid",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={db_port(spec)}",
        f"StorageUser={DB_USER}",
        f"StoragePass={password}",
        f"StorageLoc={_database(spec)}",
        "",
    ])


def start(spec: ClusterSpec, timeout: float = 60) -> None:
    """MariaDB, then slurmdbd, until it answers ``sacctmgr``; before slurmctld starts."""
    password = _start_mariadb(spec)
    # slurmdbd refuses a configuration others can read: it holds the database password.
    atomic_write(os.path.join(spec.dir, "etc", "slurmdbd.conf"), _dbd_conf(spec, password), mode=0o600)
    proc = subprocess.run([_tool("slurmdbd")], env=spec.env(), capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        raise SlurmError(f"slurmdbd did not start: {proc.stderr.strip()} (log: {spec.dir}/log/slurmdbd.log)")
    _wait("slurmdbd", lambda: _sacctmgr(spec, ["show", "cluster"]).returncode == 0, timeout,
          f"{spec.dir}/log/slurmdbd.log")
    _sacctmgr(spec, ["add", "cluster", spec.name])


def _sacctmgr(spec: ClusterSpec, args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("sacctmgr"), "-i", *args], env=spec.env(), capture_output=True, text=True,
                          timeout=30, check=False)


def register(spec: ClusterSpec, users: List[str]) -> None:
    """An account for the test users (jobs are recorded either way; this makes ``sacct -a`` tidy)."""
    _sacctmgr(spec, ["add", "account", "sgtest", "Description=slurm-gpu tests", "Organization=slurm-gpu"])
    for user in ("root", *users):
        _sacctmgr(spec, ["add", "user", user, "Account=sgtest"])


def _pid(path: str) -> int:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def stop(spec: ClusterSpec, timeout: float = 20) -> List[str]:
    """Stop slurmdbd, then MariaDB; the names of those that ran."""
    stopped = []
    for name, path in (("slurmdbd", os.path.join(_db_dir(spec), "slurmdbd.pid")),
                       ("mariadbd", os.path.join(_db_dir(spec), "mariadb.pid"))):
        pid = _pid(path)
        if not pid or not _is(pid, name):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is(pid, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is(pid, name):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped


def _is(pid: int, name: str) -> bool:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as fh:
            comm = fh.read().strip()
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            zombie = fh.read().split(") ")[-1][:1] == "Z"
    except OSError:
        return False
    return comm.startswith(name[:15]) and not zombie
