"""docker-slurm/ from the host: a private dockerd, the image (built once, cached), the compose project.

- ``Dockerd``: a dockerd of its own (data root, exec root and socket in one folder, ``--bridge=none`` and
  no iptables, so the host's network is left alone); ``stop`` waits for it to exit and unmounts what it
  leaves behind.
- ``ensure_image``: the image ``slurm-gpu/docker-slurm:<suite>`` from ``docker-slurm/Dockerfile``, loaded
  from ``<cache>/<suite>-<key>.tar`` when one was saved for the same Dockerfile and package content, else
  built through the compose file (on ``debian:<suite>``, imported from a debootstrap root where no
  registry answers) and saved there.
- ``Compose``: ``docker-compose`` on that project (``up``, ``down``, ``exec``), one project per port base.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from slurm_gpu.core.errors import SlurmGpuError
from slurm_gpu.testbed import roots

__all__ = ["DockerError", "Dockerd", "Compose", "repo_root", "context_files", "image_key", "image_name",
           "build_context", "cached_image", "ensure_image", "image_cache_dir", "missing_tools", "SUITE_ROOTS"]

IMAGE_CACHE_ENV = "SLURM_GPU_IMAGE_CACHE"
DEFAULT_IMAGE_CACHE = "/var/cache/slurm-gpu/images"
LOCAL_CA_DIR = "/usr/local/share/ca-certificates"
# The base each suite's image starts from where no registry answers: a debootstrap root (trixie's and
# sid's are the Slurm roots of the version matrix, so no other root is built for them).
SUITE_ROOTS = {"bookworm": roots.DEBIAN_12, "trixie": roots.SLURM_ROOTS["24.11"],
               "sid": roots.SLURM_ROOTS["26.05"]}
# What the image copies from the build context (as /.dockerignore lets through).
_CONTEXT_TOP = ("pyproject.toml", "README.md")
_CONTEXT_TREES = ("slurm_gpu", "templates")
_CA_DIR = os.path.join("docker-slurm", "ca-certificates")


class DockerError(SlurmGpuError):
    """dockerd, docker or docker-compose failed."""


def missing_tools() -> Optional[str]:
    """None when a private dockerd and compose can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (dockerd)"
    for tool in ("dockerd", "docker", "docker-compose", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install docker.io docker-compose)"
    return None


def _run(args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 120,
         what: str = "", check: bool = True, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"{what or args[0]}: no answer after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise DockerError(f"{what or ' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return proc


class Dockerd:
    """A dockerd whose every file lives under ``home``: ``data``, ``exec``, ``docker.sock``, its log."""

    def __init__(self, home: str):
        self.home = home
        self.socket = os.path.join(home, "docker.sock")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def env(self) -> Dict[str, str]:
        """Environment for docker and docker-compose talking to this daemon only."""
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}",
                   DOCKER_CONFIG=os.path.join(self.home, "cli"))
        env.pop("DOCKER_CONTEXT", None)
        return env

    def start(self, timeout: float = 60) -> Dockerd:
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        args = ["dockerd", "--data-root", os.path.join(self.home, "data"),
                "--exec-root", os.path.join(self.home, "exec"), "-H", f"unix://{self.socket}",
                "--pidfile", os.path.join(self.home, "docker.pid"), "--bridge=none", "--iptables=false",
                "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false"]
        with open(os.path.join(self.home, "dockerd.log"), "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerError(f"dockerd exited ({self.proc.returncode}); see {self.home}/dockerd.log")
            if os.path.exists(self.socket) and self.docker(["version"], check=False).returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise DockerError(f"dockerd did not answer within {timeout:.0f} s; see {self.home}/dockerd.log")

    def docker(self, args: Sequence[str], timeout: float = 120, check: bool = True,
               what: str = "") -> subprocess.CompletedProcess:
        return _run(["docker", *args], env=self.env, timeout=timeout, check=check,
                    what=what or "docker " + " ".join(args[:2]))

    def stop(self, timeout: float = 30) -> None:
        """Stop the daemon (its containerd with it), then unmount whatever it left under ``home``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        roots.unmount_below(self.home)  # <exec-root>/netns/default stays mounted after dockerd exits

    def remove(self) -> None:
        """Stop, then delete ``home`` (refused while anything is still mounted below it)."""
        self.stop()
        if _mounted_below(self.home):
            raise DockerError(f"still mounted below {self.home}: {_mounted_below(self.home)}")
        shutil.rmtree(self.home, ignore_errors=True)


def _mounted_below(path: str) -> List[str]:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == path or p.startswith(path + "/")]


def repo_root() -> str:
    """The checkout the package runs from (docker-slurm/ lives at its top level)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(here, "docker-slurm", "Dockerfile")):
        raise DockerError(f"no docker-slurm/Dockerfile in {here}: run from a checkout of slurm-gpu")
    return here


def _walk(top: str, rel: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(os.path.join(top, rel), followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                yield os.path.relpath(os.path.join(dirpath, name), top)


def context_files(repo: str) -> List[str]:
    """Paths (relative to ``repo``) the image is built from, sorted; symlinks are followed."""
    files = [os.path.join("docker-slurm", "Dockerfile"), *_CONTEXT_TOP]
    for tree in _CONTEXT_TREES:
        files.extend(_walk(repo, tree))
    return sorted(set(files))


def _local_cas() -> List[str]:
    """The host's local CA certificates (a TLS-inspecting proxy's among them, where there is one)."""
    try:
        return sorted(os.path.join(LOCAL_CA_DIR, n) for n in os.listdir(LOCAL_CA_DIR) if n.endswith(".crt"))
    except OSError:
        return []


def image_key(repo: str, suite: str, base: str, cas: Sequence[str] = ()) -> str:
    """What the image depends on: Dockerfile, package files, suite, base, extra certificates."""
    digest = hashlib.sha256(f"{suite}\n{base}\n".encode())
    for rel in context_files(repo):
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(repo, rel), "rb") as fh:
            digest.update(hashlib.sha256(fh.read()).digest())
    for path in cas:
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return digest.hexdigest()[:16]


def build_context(repo: str, dest: str, cas: Sequence[str] = ()) -> str:
    """A build context with only what the image copies, plus the certificates ``cas``."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel in context_files(repo):
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(repo, rel), os.path.join(dest, rel))
    os.makedirs(os.path.join(dest, _CA_DIR), exist_ok=True)
    for path in cas:
        shutil.copyfile(path, os.path.join(dest, _CA_DIR, os.path.basename(path)))
    return dest


def image_name(suite: str) -> str:
    return f"slurm-gpu/docker-slurm:{suite}"


def image_cache_dir() -> str:
    return os.environ.get(IMAGE_CACHE_ENV, DEFAULT_IMAGE_CACHE)


class Compose:
    """``docker-compose`` on docker-slurm/docker-compose.yml as project ``sg<port_base>``."""

    def __init__(self, daemon: Dockerd, repo: str, port_base: int, suite: str = "bookworm",
                 context: Optional[str] = None):
        self.daemon = daemon
        self.file = os.path.join(repo, "docker-slurm", "docker-compose.yml")
        self.project = f"sg{port_base}"
        self.env = dict(daemon.env, SLURM_GPU_PORT_BASE=str(port_base), SLURM_GPU_SUITE=suite,
                        COMPOSE_PROJECT_NAME=self.project)
        if context:
            self.env["SLURM_GPU_DOCKER_CONTEXT"] = context

    def run(self, args: Sequence[str], timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        return _run(["docker-compose", "-f", self.file, "-p", self.project, *args], env=self.env,
                    timeout=timeout, check=check, what="docker-compose " + " ".join(args[:2]))

    def up(self) -> None:
        self.run(["up", "-d", "--no-build"])

    def down(self) -> None:
        self.run(["down", "--volumes", "--remove-orphans", "--timeout", "10"], check=False)

    def exec(self, service: str, args: Sequence[str], user: str = "root", timeout: float = 60,
             stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        cid = self.container(service)
        cmd = ["docker", "exec", *(["-i"] if stdin is not None else []), "-u", user, "-w", "/tmp", cid, *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, input=stdin,
                              check=False)

    def container(self, service: str) -> str:
        ids = self.run(["ps", "-q", service]).stdout.split()
        if not ids:
            raise DockerError(f"no container for service {service} in project {self.project}")
        return ids[0]


def _cached(cache: str, suite: str, key: str) -> Tuple[str, List[str]]:
    """The tarball for ``key`` and the older ones of the same suite."""
    path = os.path.join(cache, f"{suite}-{key}.tar")
    try:
        stale = [os.path.join(cache, n) for n in os.listdir(cache)
                 if n.startswith(f"{suite}-") and n.endswith(".tar") and os.path.join(cache, n) != path]
    except OSError:
        stale = []
    return path, stale


def import_base(daemon: Dockerd, root: str, tag: str) -> None:
    """``tar -C root -c . | docker import - tag``."""
    with subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE) as tar:
        imp = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, env=daemon.env,
                             capture_output=True, text=True, timeout=300, check=False)
        if tar.stdout:
            tar.stdout.close()
    if tar.returncode != 0 or imp.returncode != 0:
        raise DockerError(f"importing {root} as {tag} failed: {imp.stderr.strip()}")


def cached_image(repo: str, suite: str = "bookworm") -> Optional[str]:
    """The saved image for the current content, if there is one."""
    spec = SUITE_ROOTS.get(suite)
    if spec is None:
        return None
    path, _ = _cached(image_cache_dir(), suite, image_key(repo, suite, spec.name, _local_cas()))
    return path if os.path.isfile(path) else None


def ensure_image(daemon: Dockerd, repo: str, work: str, suite: str = "bookworm",
                 progress: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """``slurm-gpu/docker-slurm:<suite>`` in ``daemon``: loaded from the cache, or built and saved.

    Returns what happened (``source``: ``cache`` or ``build``, ``seconds``, ``key``)."""
    started = time.monotonic()
    spec = SUITE_ROOTS.get(suite)
    if spec is None:
        raise DockerError(f"no base root for suite {suite!r} (known: {', '.join(SUITE_ROOTS)})")
    cas = _local_cas()
    key = image_key(repo, suite, spec.name, cas)
    cache = image_cache_dir()
    path, stale = _cached(cache, suite, key)
    if os.path.isfile(path):
        daemon.docker(["load", "-i", path], timeout=300)
        return {"source": "cache", "key": key, "seconds": round(time.monotonic() - started, 1)}
    if progress:
        progress(f"building {image_name(suite)} (base root, apt, pip: a few minutes)")
    root = roots.ensure(spec, progress=progress)
    import_base(daemon, root, f"debian:{suite}")
    context = build_context(repo, os.path.join(work, "context"), cas)
    Compose(daemon, repo, 17000, suite, context=context).run(["build", "controller"], timeout=1200)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    daemon.docker(["save", "-o", tmp, image_name(suite)], timeout=300)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    for old in stale:  # images of older content: never loaded again
        if ".tmp-" not in old:
            os.unlink(old)
    return {"source": "build", "key": key, "seconds": round(time.monotonic() - started, 1)}
