"""What every root hook needs: the configuration, the node agent built from it, and a log line per run."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

if TYPE_CHECKING:
    from slurm_gpu.devices.api import Driver

# Every user of this module builds an agent (prolog, epilog, reconcile): nothing is saved by deferring it.
from slurm_gpu.node.agent import NodeAgent

__all__ = ["HookAgent", "build_agent", "log_event", "policy_from_config", "run_job_hook", "served_by"]

_served_by = 0  # the hook server's pid in a hook it serves (slurm_gpu.hooks.server): its log lines say so
_answer: Optional[Callable[[int], None]] = None  # gives a served hook's exit status to its client


def served_by(pid: int, answer: Optional[Callable[[int], None]] = None) -> None:
    """Mark this process as a hook the server ``pid`` runs; ``answer(code)`` ends the hook process that
    Slurm waits for with ``code`` while this one may go on (an Epilog's re-plan of the node's counts)."""
    global _served_by, _answer
    _served_by = pid
    _answer = answer


class HookAgent(NodeAgent):
    """The node agent of one hook run, with the configuration it was built from (its log file)."""

    def __init__(self, *args: Any, config: Any, call_log: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config = config
        self.call_log = call_log  # devices.calllog.NvmlCallLog: create/destroy times, NVML errors


def policy_from_config(config: Any) -> Any:
    from slurm_gpu.devices.access import DEFAULT_CAPS_DIR
    from slurm_gpu.node.config import cdi_dir
    from slurm_gpu.node.context import AgentPolicy

    sandbox = getattr(config.driver, "sim_sandbox", None)
    caps_dir = os.path.join(sandbox, "dev", "nvidia-caps") if sandbox else DEFAULT_CAPS_DIR
    return AgentPolicy(max_count_per_node=config.policy.max_count_per_node, caps_dir=caps_dir,
                       publish_features=config.features.publish, admission=config.admission.mode,
                       hpc_job_mapping_dir=config.monitoring.hpc_job_mapping_dir, cdi_dir=cdi_dir(config))


def build_agent(config_path: Optional[str] = None, node: Optional[str] = None,
                job_id: Optional[int] = None) -> HookAgent:
    """The node agent over the configured driver, journal and Slurm CLI; the caller closes its driver.
    ``job_id``: the job a Prolog reads first, asked of Slurm as soon as its tools are known."""
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.node.config import load_config, node_name
    from slurm_gpu.slurm.client import SlurmCli
    from slurm_gpu.state.journal import Journal

    name = node_name(node)
    config = load_config(config_path, node=name)
    env = None
    if config.slurm.conf:
        env = {"SLURM_CONF": config.slurm.conf, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    from slurm_gpu.core.errors import DriverError
    from slurm_gpu.devices.calllog import NvmlCallLog

    slurm = SlurmCli(config.slurm.bin_dir, env=env,
                     version_cache=os.path.join(config.state_dir, "slurm-version.json"))
    if job_id is not None:
        slurm.start_job(job_id)
    driver: Driver
    call_log = NvmlCallLog()
    try:
        driver = open_driver(config.driver.kind, sim_state=config.driver.sim_state,
                             sim_faults=config.driver.sim_faults, call_log=call_log)
    except DriverError as exc:
        driver = FailedDriver(exc)  # the hook still runs: it drains the node with this reason
    journal = Journal(config.state_dir, lock_timeout_s=config.lock_timeout_s)
    return HookAgent(name, driver, journal, slurm, policy_from_config(config), config=config,
                     call_log=call_log)


class FailedDriver:
    """Stands in for a driver that could not be opened (nvmlInit failed): every call raises its error."""

    def __init__(self, error: Exception):
        self.error = error

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise self.error


def log_event(agent: Any, hook: str, record: Mapping[str, Any], nvml: bool = True) -> None:
    """One JSON line per hook run: to the configured log file, else ``<state_dir>/hooks.log``. It carries
    the run's NVML create/destroy times and errors (``nvml``), how often it changed the node's features
    in Slurm (``capacity_updates``; the exporter's histograms and counters come from these lines) and,
    when the hook server ran it, that server's pid (``served_by``). A served Epilog's re-plan after its
    answer has a line of its own (hook ``replan``: its updates and problems, no NVML times)."""
    line = {"time": round(time.time(), 3), "hook": hook, "node": getattr(agent, "node", None), **record}
    if _served_by:
        line["served_by"] = _served_by
    call_log = getattr(agent, "call_log", None)
    if call_log and nvml:
        line["nvml"] = call_log.to_dict()
    publisher = getattr(agent, "publisher", None)
    updates = getattr(publisher, "updates", 0)
    if isinstance(updates, int) and updates:
        line["capacity_updates"] = updates
    released = getattr(publisher, "released", 0)
    if isinstance(released, int) and released:
        line["released_jobs"] = released  # held jobs naming this node, released (count admission)
    text = json.dumps(line, sort_keys=True, default=str, separators=(",", ":"))
    config = getattr(agent, "config", None)
    path = None
    if config is not None:
        path = config.log.file or os.path.join(config.state_dir, "hooks.log")
    from slurm_gpu.core.errors import SlurmGpuError

    try:
        if path is None:
            raise OSError("no log file")
        from slurm_gpu.state.fsutil import append_line

        append_line(path, text)
    except (OSError, SlurmGpuError):
        sys.stderr.write(text + "\n")  # a log line is never worth a drain


def run_job_hook(hook: str, action: str, config_path: Optional[str] = None) -> int:
    """Run ``NodeAgent.<action>`` (prepare or release) for the job in the environment, as hook ``hook``.

    Logs one line either way. A driver that fails (not a packing problem: those are handled inside) drains
    the node on purpose with the reason and sends the job back to the queue, then returns 0. Returns 1 on
    any other :class:`SlurmGpuError` (the journal or controller unusable: Slurm drains the node), else 0.
    """
    from slurm_gpu.core.errors import DriverError, SlurmGpuError
    from slurm_gpu.core.vocab import REPLAN_HOOK
    from slurm_gpu.node.context import JobContext

    t0 = time.monotonic()
    agent = None
    try:
        ctx = JobContext.from_env()
        agent = build_agent(config_path, job_id=ctx.base_job_id if action == "prepare" else None)
        # Served, an Epilog leaves the node's re-plan for after its answer: Slurm waits for the instances
        # to be gone, not for the counts (which the publisher's watch loop would re-plan too).
        later = action == "release" and _answer is not None
        try:
            out = agent.release(ctx, publish=False) if later else getattr(agent, action)(ctx)
        except DriverError as exc:
            out = agent.driver_broken(ctx, hook, exc)
        log_event(agent, hook, {**out.to_dict(), "seconds": round(time.monotonic() - t0, 4)})
        if _answer is not None:
            try:
                _answer(0)  # served: the hook's process ends here, its log line written
            except OSError:
                pass  # the client is gone (slurmd killed it): what is left is still done
        if later:
            t1 = time.monotonic()
            problems = agent.publish_after_release()
            log_event(agent, REPLAN_HOOK, {"job_id": ctx.job_id, "problems": problems,
                                           "seconds": round(time.monotonic() - t1, 4)}, nvml=False)
    except SlurmGpuError as exc:
        log_event(agent, hook, {"error": str(exc), "type": type(exc).__name__})
        sys.stderr.write(f"slurm-gpu {hook}: {exc}\n")
        return 1
    finally:
        if agent is not None:
            agent.driver.close()
    return 0
