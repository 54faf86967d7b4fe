"""``slurm-gpu prolog | epilog | task-prolog | reconcile | publish``: Slurm's hooks, the repair command and
the re-plan loop."""

from __future__ import annotations

import sys
from typing import Dict, Optional

import click

from slurm_gpu.cli.main import get_context
from slurm_gpu.cli.output import emit_json, json_option


@click.command("prolog")
def prolog() -> None:
    """Slurm Prolog (root): create the job's MIG instances (reads SLURM_JOB_ID/UID/GID).

    Exits 0 for every job outcome (created, none, refused, requeued: each logged to
    <state_dir>/hooks.log as one JSON line); non-zero only when the driver, journal or controller fails.
    Slurm runs the same code as `slurm-gpu-hook prolog` (prolog.d/50-slurm-gpu), which starts without
    the CLI's imports (slurm.conf: Prolog=/etc/slurm/prolog.d/*, PrologFlags=Alloc,Contain).

    \b
    Example:
      SLURM_JOB_ID=42 SLURM_JOB_UID=1000 SLURM_JOB_GID=1000 SLURMD_NODENAME=gpu01 slurm-gpu prolog
    """
    from slurm_gpu.hooks.prolog import main

    sys.exit(main(get_context().config_path))


@click.command("epilog")
def epilog() -> None:
    """Slurm Epilog (root): destroy the job's MIG instances; safe to run twice.

    Slurm runs the same code as `slurm-gpu-hook epilog` (epilog.d/50-slurm-gpu; slurm.conf:
    Epilog=/etc/slurm/epilog.d/*).

    \b
    Example:
      SLURM_JOB_ID=42 SLURM_JOB_UID=1000 SLURM_JOB_GID=1000 SLURMD_NODENAME=gpu01 slurm-gpu epilog
    """
    from slurm_gpu.hooks.epilog import main

    sys.exit(main(get_context().config_path))


@click.command("task-prolog")
@click.option("--state-dir", default=None, help="Journal directory (default: the configuration's).")
def task_prolog(state_dir: Optional[str]) -> None:
    """Slurm TaskProlog: print `export CUDA_VISIBLE_DEVICES=MIG-...` for this task.

    Task L of a job with n instances gets instance L mod n (SLURM_LOCALID); SLURM_GPU_MIG_DEVICES
    lists all of them. The fast form for slurm.conf is
    `python3 -I -S <package>/hooks/task_prolog.py STATE_DIR`. Runs as the job's user, inside a job.

    \b
    Example:
      SLURM_JOB_ID=42 SLURM_LOCALID=0 slurm-gpu task-prolog --state-dir /var/lib/slurm-gpu
    """
    from slurm_gpu.hooks.task_prolog import main

    sys.exit(main([state_dir or get_context().config.state_dir]))


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Only report what would be repaired.")
@click.option("--node", default=None, help="Node name (default: SLURMD_NODENAME, else the host name).")
@json_option
def reconcile(dry_run: bool, node: Optional[str], as_json: bool) -> None:
    """Compare GPUs, journal and Slurm's jobs on this node; reap orphans and finish interrupted releases.

    Never touches an instance of a job Slurm still runs here. Exit status 0 when every repair succeeded
    (or --dry-run), 6 when some could not be made (they are listed).

    \b
    Example:
      slurm-gpu reconcile --dry-run
      slurm-gpu --config /etc/slurm-gpu/config.yaml reconcile --json
    """
    from slurm_gpu.hooks.runtime import build_agent, log_event

    agent = build_agent(get_context().config_path, node=node)
    try:
        report = agent.reconcile(dry_run=dry_run)
    finally:
        agent.driver.close()
    failed = [a for a in report.actions if not dry_run and a.kind != "report" and not a.done]
    if not dry_run:
        repairs: Dict[str, int] = {}
        for a in report.actions:
            if a.done:
                repairs[str(a.kind)] = repairs.get(str(a.kind), 0) + 1
        log_event(agent, "reconcile", {"actions": len(report.actions), "failed": len(failed),
                                       "repairs": repairs})
    if as_json:
        emit_json("reconcile", {"node": agent.node, **report.to_dict()})
    else:
        if report.slurm_error:
            click.echo("warning: Slurm not reachable, recorded jobs treated as running: "
                       f"{report.slurm_error}")
        if not report.actions:
            click.echo(f"{agent.node}: nothing to repair")
        for a in report.actions:
            state = "would do" if dry_run else ("done" if a.done else ("reported" if a.kind == "report" else
                                                                       "FAILED"))
            click.echo(f"{state:9} {a.kind:15} {a.detail}" + (f"  [{a.error}]" if a.error else ""))
    if failed:
        from slurm_gpu.core.errors import EXIT_STATE

        sys.exit(EXIT_STATE)


@click.command("publish")
@click.option("--node", default=None, help="Node name (default: SLURMD_NODENAME, else the host name).")
@click.option("--watch", "interval", type=click.FloatRange(min=0.2), default=None, metavar="SECONDS",
              help="Repeat every SECONDS until stopped (the node's re-plan loop).")
@json_option
def publish(node: Optional[str], interval: Optional[float], as_json: bool) -> None:
    """Tell Slurm what this node can host now, under the node lock.

    With count admission (admission.mode: counts) this re-plans the node's target layout for the pending
    queue's demand and publishes it as migp counts (a count is lowered before others are raised, and never
    below what Slurm has allocated); with fit features it republishes them. Hooks do this themselves after
    each change; --watch makes new demand reach idle nodes (the systemd unit slurm-gpu-publish runs it).

    \b
    Example:
      slurm-gpu publish --json
      slurm-gpu --config /etc/slurm-gpu/config.yaml publish --watch 5
    """
    import time

    from slurm_gpu.core.errors import SlurmGpuError
    from slurm_gpu.hooks.runtime import build_agent

    agent = build_agent(get_context().config_path, node=node)
    try:
        while True:
            try:
                agent.publisher.prefetch()  # the queue, read before the node lock is taken
                with agent.journal.lock():
                    published = agent.publish_features(agent.snapshot())
            except SlurmGpuError as exc:
                if interval is None:
                    raise
                click.echo(f"{agent.node}: {exc}", err=True)  # the loop outlives a busy controller
            else:
                if as_json:
                    emit_json("publish", {"node": agent.node, "published": list(published),
                                          "updates": agent.publisher.updates})
                elif interval is None:
                    click.echo(f"{agent.node}: {','.join(published) or 'nothing'}")
            if interval is None:
                return
            time.sleep(interval)
    finally:
        agent.driver.close()
