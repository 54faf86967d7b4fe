from __future__ import annotations

import pytest

from slurm_gpu.cli.main import run
from slurm_gpu.confgen import render as confgen
from slurm_gpu.confgen.inventory import inventory_from_dict, load_inventory
from slurm_gpu.core.errors import BadInputError, UnknownModelError, UnknownProfileError

MIXED = {
    "version": 1,
    "nodes": [
        {"names": "gpu[01-16]", "gpus": "H100-80GB:8", "cpus": 64, "memory_mib": 512000, "features": ["ib"]},
        {"names": "old[1-2]", "gpus": "A100-40GB:2", "mode": "static", "type_prefix": "a100_",
         "layout": [["3g.20gb@1", "3g.20gb@2"], []]},
    ],
}


def test_dynamic_node_lines_under_feature_admission():
    inv = inventory_from_dict(MIXED)
    features_mode = confgen.Options(admission="features")
    slurm = confgen.render("slurm", inv, features_mode)
    line = next(x for x in slurm.splitlines() if x.startswith("NodeName=gpu[01-16]"))
    assert " Gres=mig:64 " in line and " CPUs=64 " in line and " RealMemory=512000 " in line
    features = line.split("Features=")[1].split()[0].split(",")
    assert features[0] == "ib" and "mig.7g.80gb.8" in features and "mig.4g.40gb.8" in features
    assert "GresTypes=gpu,mig" in slurm and "JobSubmitPlugins=lua" in slurm
    gres = confgen.render("gres", inv, features_mode)
    assert "NodeName=gpu[01-16] Name=mig Count=64\n" in gres


def test_static_layout_lines_follow_autodetect_files():
    inv = inventory_from_dict(MIXED)
    gres = confgen.render("gres", inv).splitlines()
    static = [x for x in gres if x.startswith("NodeName=old")]
    assert static == [
        "NodeName=old[1-2] Name=gpu Type=a100_3g.20gb "
        "MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/nvidia-cap12,/dev/nvidia-caps/nvidia-cap13",
        "NodeName=old[1-2] Name=gpu Type=a100_3g.20gb "
        "MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/nvidia-cap21,/dev/nvidia-caps/nvidia-cap22",
        "NodeName=old[1-2] Name=gpu Type=a100-40gb File=/dev/nvidia1",
    ]
    slurm = confgen.render("slurm", inv)
    assert "NodeName=old[1-2] Gres=gpu:a100-40gb:1,gpu:a100_3g.20gb:2\n" in slurm


@pytest.mark.parametrize("change,exc", [
    ({"bogus": 1}, BadInputError),
    ({"version": 2}, BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB:2", "colour": "red"}]}, BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H999:2"}]}, UnknownModelError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB:0"}]}, BadInputError),
    ({"nodes": [{"names": "a b", "gpus": "H100-80GB"}]}, BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB", "mode": "static"}]}, BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB", "layout": ["1g.10gb@1"]}]}, BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB", "mode": "static", "layout": ["3g.20gb@1"]}]},
     UnknownProfileError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB", "mode": "static", "layout": ["1g.10gb@1", "1g.10gb@1"]}]},
     BadInputError),
    ({"nodes": [{"names": "a", "gpus": "H100-80GB", "features": ["mig.1g.10gb.1"]}]}, BadInputError),
])
def test_inventory_rejects(change, exc):
    data = {"version": 1, "nodes": [{"names": "a", "gpus": "H100-80GB"}]}
    data.update(change)
    with pytest.raises(exc):
        inventory_from_dict(data)


def test_static_type_colliding_with_dynamic_profile_is_rejected():
    data = {"version": 1, "nodes": [
        {"names": "d1", "gpus": "H100-80GB"},
        {"names": "s1", "gpus": "H100-80GB", "mode": "static", "layout": ["3g.40gb@1"]},
    ]}
    with pytest.raises(BadInputError) as err:
        confgen.render("gres", inventory_from_dict(data))
    assert err.value.part == "3g.40gb"


def test_cgroup_and_hooks():
    inv = inventory_from_dict(MIXED)
    opts = confgen.Options(prolog="/usr/lib/slurm-gpu/prolog", task_prolog="/usr/lib/slurm-gpu/task-prolog")
    assert "ConstrainDevices=yes" in confgen.render("cgroup", inv, opts)
    slurm = confgen.render("slurm", inv, opts)
    assert "Prolog=/usr/lib/slurm-gpu/prolog\n" in slurm
    assert "TaskProlog=/usr/lib/slurm-gpu/task-prolog\n" in slurm
    assert "Epilog=" not in slurm


def test_feature_admission_starts_one_job_per_scheduling_pass_where_nodes_are_dynamic():
    # Fit features are a snapshot within a pass: they need one start per pass (docs/admission.md).
    features_mode = confgen.Options(admission="features")
    slurm = confgen.render("slurm", inventory_from_dict(MIXED), features_mode)
    lines = [x for x in slurm.splitlines() if x.startswith("SchedulerParameters=")]
    assert lines == ["SchedulerParameters=sched_max_job_start=1,bf_max_job_start=1,bf_interval=5"]
    own = confgen.render("slurm", inventory_from_dict(MIXED),
                         confgen.Options(admission="features", scheduler_parameters=""))
    assert "SchedulerParameters" not in own  # the site keeps its own
    static_only = dict(MIXED, nodes=MIXED["nodes"][1:])
    static_conf = confgen.render("slurm", inventory_from_dict(static_only), features_mode)
    assert "SchedulerParameters" not in static_conf


def test_templates_dir_found():
    assert (confgen.templates_dir() / "job_submit.lua.j2").is_file()


def test_cli_writes_files(tmp_path, capsys):
    import yaml

    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text(yaml.safe_dump(MIXED))
    out = tmp_path / "out"
    assert run(["config", "all", "--inventory", str(inv_file), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cgroup.conf", "gres.conf", "job_submit.lua", "slurm.conf"]
    assert (out / "gres.conf").stat().st_mode & 0o777 == 0o644
    assert load_inventory(str(inv_file)).groups[0].mig_count == 64


def test_cli_bad_inventory_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnodes: [{names: a, gpus: H100-80GB, extra: 1}]\n")
    assert run(["config", "gres", "--inventory", str(bad)]) == 3
    assert "unknown keys extra" in capsys.readouterr().err


def test_count_admission_files_carry_no_start_limit_and_a_constant_migp_total():
    nodes = [{"names": "g[1-4]", "gpus": "H100-80GB:8", "cpus": 64}]
    inv = inventory_from_dict({"version": 1, "nodes": nodes})
    opts = confgen.Options()  # count admission is what ships
    assert opts.admission == "counts"
    slurm, gres = confgen.render("slurm", inv, opts), confgen.render("gres", inv, opts)
    assert "GresTypes=gpu,migp" in slurm and "SchedulerParameters" not in slurm
    node = next(line for line in slurm.splitlines() if line.startswith("NodeName=g[1-4]"))
    terms = dict(t.split(":", 1)[1].rsplit(":", 1) for t in node.split("Gres=")[1].split()[0].split(","))
    assert terms["7g.80gb"] == "8" and sum(int(v) for v in terms.values()) == 56  # 8 GPUs x 7 instances
    assert "Features=" not in node
    assert "NodeName=g[1-4] Name=migp Type=unused Count=56" in gres
    assert "Name=mig " not in gres
    placeholder = next(line for line in slurm.splitlines() if "State=FUTURE" in line)
    assert "migp:1g.10gb:56" in placeholder and "Features" not in placeholder
    # one per MIG node, so a multi-node job of a type no node publishes now pends instead of being refused
    assert placeholder.startswith("NodeName=slurm-gpu-placeholder[1-4] ")
    # Fit features keep their start limit unless the site sets its own.
    assert "SchedulerParameters=sched_max_job_start=1" in confgen.render("slurm", inv,
                                                                        confgen.Options(admission="features"))
    with pytest.raises(BadInputError, match="admission"):
        confgen.render("slurm", inv, confgen.Options(admission="fast"))


@pytest.mark.parametrize("admission, expected", [
    ("counts", "AccountingStorageTRES=gres/migp,gres/migp:1g.10gb,gres/migp:1g.10gb_me,gres/migp:1g.20gb,"
               "gres/migp:2g.20gb,gres/migp:3g.40gb,gres/migp:4g.40gb,gres/migp:7g.80gb"),
    ("features", "AccountingStorageTRES=gres/mig"),
])
def test_accounting_tres_only_for_a_cluster_with_slurmdbd(admission, expected):
    # slurmctld refuses to start with a gres TRES and no slurmdbd: the line is opt-in.
    inv = inventory_from_dict({"version": 1, "nodes": [{"names": "n1", "gpus": "H100-80GB:2"}]})
    plain = confgen.render("slurm", inv, confgen.Options(admission=admission))
    assert "AccountingStorageTRES" not in plain
    text = confgen.render("slurm", inv, confgen.Options(admission=admission, accounting=True))
    assert expected in text.splitlines()


def test_slurm_release_is_checked_and_decides_srun_allocations():
    inv = inventory_from_dict({"version": 1, "nodes": [{"names": "n1", "gpus": "H100-80GB:2"}]})
    for version, allowed in (("22.05", "false"), ("24.11", "true"), ("26.05.5", "true")):
        lua = confgen.render("job-submit", inv, confgen.Options(slurm_version=version))
        assert f"SG.srun_allocations = {allowed}" in lua
    with pytest.raises(BadInputError, match="not a Slurm release"):
        confgen.render("job-submit", inv, confgen.Options(slurm_version="latest"))
