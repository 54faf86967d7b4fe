"""The `slurm-gpu` group: lazy loading, global options, exit codes, and the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_runner import cli_runner

from slurm_gpu import __version__
from slurm_gpu.cli import main as cli_main
from slurm_gpu.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_DRIVER,
    EXIT_ERROR,
    EXIT_NO_FIT,
    EXIT_USAGE,
    DriverError,
    NoFitError,
    RequestError,
)


def invoke(args, env=None):
    """Run the real main() in-process; returns click's Result (exit_code, stdout, stderr)."""
    return cli_runner().invoke(cli_main.main, args, env=env)


def test_help_lists_every_registered_command_with_its_short_help():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name, (_target, short) in cli_main.COMMANDS.items():
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name + " "))
        assert short.split()[0] in line
    assert "Example:" in result.stdout


def test_help_imports_no_command_module():
    code = (
        "import sys\n"
        "from slurm_gpu.cli.main import run\n"
        "rc = run(['--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('slurm_gpu.') and m not in "
        "('slurm_gpu.cli', 'slurm_gpu.cli.main', 'slurm_gpu.core', 'slurm_gpu.core.errors',"
        " 'slurm_gpu.node'))\n"
        "print('LOADED', loaded, rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED [] 0"


def test_version():
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"slurm-gpu {__version__}"


def test_unknown_command_is_a_usage_error():
    result = invoke(["no-such-command"])
    assert result.exit_code == EXIT_USAGE
    assert "no-such-command" in result.stderr


def test_missing_module_fails_only_when_its_command_runs(monkeypatch):
    monkeypatch.setitem(cli_main.cli.lazy_commands, "ghost", ("slurm_gpu.cli.no_such_module:cmd", "A ghost."))
    listed = invoke(["--help"])
    assert listed.exit_code == 0 and "ghost" in listed.stdout
    result = invoke(["ghost", "--some-flag"])
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith("slurm-gpu: error: command 'ghost' is not available")
    assert "slurm_gpu.cli.no_such_module" in result.stderr


def test_target_that_is_not_a_command_is_reported(monkeypatch):
    monkeypatch.setitem(cli_main.cli.lazy_commands, "odd", ("slurm_gpu.cli.output:cell", "Not a command."))
    result = invoke(["odd"])
    assert result.exit_code == EXIT_ERROR
    assert "has no click command 'cell'" in result.stderr


@pytest.fixture
def extra_commands():
    """Commands added to the real group for one test (raising library errors, reading the context)."""
    added = []

    def add(command: click.Command) -> None:
        cli_main.cli.add_command(command)
        added.append(command.name)

    yield add
    for name in added:
        cli_main.cli.commands.pop(name, None)


@pytest.mark.parametrize(
    "error, code",
    [
        (DriverError("nvml said no", nvml_code=2), EXIT_DRIVER),
        (NoFitError("3g.40gb does not fit"), EXIT_NO_FIT),
        (RequestError("bad request 'x'", part="x"), EXIT_BAD_INPUT),
    ],
)
def test_library_errors_become_their_exit_code(extra_commands, error, code):
    @click.command("boom")
    def boom():
        raise error

    extra_commands(boom)
    result = invoke(["boom"])
    assert result.exit_code == code
    assert result.stderr == f"slurm-gpu: error: {error}\n"
    assert result.stdout == ""


def test_unexpected_exception_is_exit_1_without_traceback(extra_commands):
    @click.command("crash")
    def crash():
        raise ZeroDivisionError("division by zero")

    extra_commands(crash)
    result = invoke(["crash"], env={"SLURM_GPU_DEBUG": ""})
    assert result.exit_code == EXIT_ERROR
    assert "internal error: ZeroDivisionError" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_env_lets_the_traceback_through(extra_commands):
    @click.command("crash")
    def crash():
        raise ZeroDivisionError("division by zero")

    extra_commands(crash)
    result = invoke(["crash"], env={"SLURM_GPU_DEBUG": "1"})
    assert isinstance(result.exception, ZeroDivisionError)


def test_ctx_exit_code_is_kept(extra_commands):
    @click.command("leave")
    @click.pass_context
    def leave(ctx):
        ctx.exit(7)

    extra_commands(leave)
    assert invoke(["leave"]).exit_code == 7


def test_config_option_and_env_reach_the_context(extra_commands, tmp_path):
    seen = []

    @click.command("where")
    def where():
        seen.append(cli_main.get_context().config_path)

    extra_commands(where)
    path = str(tmp_path / "c.yaml")
    assert invoke(["--config", path, "where"]).exit_code == 0
    assert invoke(["where"], env={"SLURM_GPU_CONFIG": path + ".env"}).exit_code == 0
    assert invoke(["where"], env={"SLURM_GPU_CONFIG": None}).exit_code == 0
    assert seen == [path, path + ".env", None]


def _console_script() -> Path:
    script = Path(sys.executable).with_name("slurm-gpu")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    return script


def test_installed_console_script_runs_and_maps_errors():
    script = _console_script()
    env = dict(os.environ, SLURM_GPU_DEBUG="")
    ok = subprocess.run([str(script), "catalog", "H100-80GB"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "3g.40gb" in ok.stdout
    bad = subprocess.run([str(script), "catalog", "Z999"], capture_output=True, text=True, env=env)
    assert bad.returncode == EXIT_BAD_INPUT
    assert bad.stderr.startswith("slurm-gpu: error: unknown GPU model 'Z999'")


def test_python_dash_m_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "slurm_gpu", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"slurm-gpu {__version__}"


def _every_command():
    """argv of every command and subcommand the group lists."""
    for name in sorted(cli_main.COMMANDS):
        command = cli_main._load(name, cli_main.COMMANDS[name][0])
        yield [name]
        if isinstance(command, click.Group):
            yield from ([name, sub] for sub in sorted(command.commands))


@pytest.mark.parametrize("argv", list(_every_command()), ids=" ".join)
def test_every_command_help_has_an_example(argv):
    result = invoke([*argv, "--help"])
    assert result.exit_code == 0
    example = result.stdout.split("Example:", 1)
    assert len(example) == 2, result.stdout
    assert "slurm-gpu " + argv[0] in example[1]


@pytest.mark.parametrize("argv", [["catalog"], ["plan", "--gpus", "A30-24GB", "1g.6gb"],
                                  ["config", "gres", "--gpus", "A30-24GB"]])
def test_json_documents_start_with_their_schema(argv):
    import json

    result = invoke([*argv, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert next(iter(doc)) == "schema" and doc["schema"] == f"slurm-gpu.{argv[0]}/v1"


def test_every_json_option_names_a_schema_in_the_docs():
    # Each command with --json prints "schema" first (slurm_gpu.cli.output); docs/cli.md lists them all.
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    table = docs.split("| command | schema |", 1)[1].split("\n\n", 1)[0]
    for argv in _every_command():
        command = cli_main._load(argv[0], cli_main.COMMANDS[argv[0]][0])
        if len(argv) == 2:
            command = command.commands[argv[1]]
        if any(p.name == "as_json" for p in command.params):
            row = next((line for line in table.splitlines() if f"`{' '.join(argv)}`" in line), None)
            assert row is not None and "slurm-gpu." + ".".join(argv[:1]) in row, argv


def test_config_and_cluster_json_carry_a_schema(monkeypatch, tmp_path):
    import json

    from slurm_gpu.testbed import local, spec

    written = invoke(["config", "cgroup", "--gpus", "A30-24GB", "--out", str(tmp_path), "--json"])
    assert json.loads(written.stdout) == {"schema": "slurm-gpu.config.written/v1",
                                          "written": [str(tmp_path / "cgroup.conf")]}
    monkeypatch.setattr(spec, "load_spec", lambda directory: directory)
    monkeypatch.setattr(local, "status", lambda spec: {"name": "c", "nodes": {"b": "idle", "a": "idle"}})
    monkeypatch.setattr(local, "down", lambda spec: {"stopped": [], "dir": spec})
    status = invoke(["cluster", "status", "--dir", str(tmp_path), "--json"])
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout) == {"schema": "slurm-gpu.cluster.status/v1", "name": "c",
                                         "nodes": {"a": "idle", "b": "idle"}}
    assert list(json.loads(status.stdout)["nodes"]) == ["a", "b"]
    down = json.loads(invoke(["cluster", "down", "--dir", str(tmp_path), "--json"]).stdout)
    assert down == {"schema": "slurm-gpu.cluster.down/v1", "dir": str(tmp_path), "stopped": []}
