"""job_submit.lua: the Lua logic offline (lua5.1, what Slurm links) and the real slurmctld's answers."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from slurm_gpu.confgen import render as confgen
from slurm_gpu.confgen.inventory import inventory_from_dict
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.requests import parse_gres, resolve

LUA = shutil.which("lua5.1")

DRIVER = r"""
local SG = dofile(arg[1])
local function q(s) if s == nil then return "null" end return string.format("%q", s) end
for line in io.lines(arg[2]) do
  local tres, feats = string.match(line, "^(.-)\t(.*)$")
  if feats == "" then feats = nil end
  local r, err = SG.translate(tres, feats, {})
  if not r then
    print('{"error": ' .. q(err) .. '}')
  elseif not r.changed then
    print('{"changed": false}')
  else
    print('{"tres": ' .. q(r.tres_per_node) .. ', "constraint": ' .. q(r.constraint)
      .. ', "admin_comment": ' .. q(r.admin_comment) .. '}')
  end
end
"""


def _inventory(nodes):
    return inventory_from_dict({"version": 1, "nodes": nodes})


def translate(tmp_path, inventory, cases, admission="features"):
    """Run SG.translate of the rendered script on (tres_per_node, features) pairs."""
    if LUA is None:
        pytest.skip("lua5.1 not installed")
    script = tmp_path / "job_submit.lua"
    script.write_text(confgen.render("job-submit", inventory, confgen.Options(admission=admission)))
    driver = tmp_path / "driver.lua"
    driver.write_text(DRIVER)
    data = tmp_path / "cases.tsv"
    data.write_text("".join(f"{t}\t{f or ''}\n" for t, f in cases))
    out = subprocess.run([LUA, str(driver), str(script), str(data)], capture_output=True, text=True,
                         check=True)
    return [json.loads(line.replace("\\\n", "\\n")) for line in out.stdout.splitlines()]


H100_NODES = [{"names": "n[1-2]", "gpus": "H100-80GB:4"}]


@pytest.mark.parametrize("text", ["gres:gpu:3g.40gb:2", "gres/gpu:3g.40gb:2", "gpu:3g.40gb:2", "3g.40gb:2",
                                  "gres/gpu:3g.40gb=2"])
def test_profile_forms_of_22_05_and_24_11(tmp_path, text):
    [r] = translate(tmp_path, _inventory(H100_NODES), [(text, None)])
    assert r["constraint"] == "mig.3g.40gb.2"
    assert r["tres"].endswith("mig:8")
    assert r["admin_comment"] == "slurm-gpu:gpu:3g.40gb:2"
    prefix = text[:5] if text.startswith("gres") else ""
    assert r["tres"] == prefix + "mig:8"


def test_count_admission_asks_for_the_typed_count_and_keeps_the_constraint(tmp_path):
    cases = [("gres:gpu:3g.40gb:2", None), ("gres/gpu:1g.10gb+me", "ib"), ("gpu:2", None), ("gpu:20gb", None),
             ("migp:1g.10gb:1", None), ("gres:gpu:9g.1gb", None)]
    r = translate(tmp_path, _inventory(H100_NODES), cases, admission="counts")
    assert r[0] == {"tres": "gres:migp:3g.40gb:2", "constraint": None,
                    "admin_comment": "slurm-gpu:gpu:3g.40gb:2"}
    assert r[1] == {"tres": "gres/migp:1g.10gb_me:1", "constraint": "ib",
                    "admin_comment": "slurm-gpu:gpu:1g.10gb+me:1"}
    assert r[2]["tres"] == "migp:7g.80gb:2" and r[2]["admin_comment"] == "slurm-gpu:gpu:7g.80gb:2"
    assert r[3]["tres"] == "migp:1g.20gb:1"
    assert "managed by slurm-gpu" in r[4]["error"]
    assert "unknown MIG profile" in r[5]["error"]


@pytest.mark.parametrize("admission, req_nodes, priority, held", [
    ("counts", "n1", 4294967294, True),  # names its node: held for the node agent to release
    ("counts", "n[1-2]", None, True),
    ("counts", "n1", 0, False),  # its user held it already (sbatch -H): left as it is
    ("counts", None, 4294967294, False),  # any node will do
    ("counts", "", 4294967294, False),
    ("features", "n1", 4294967294, False),
])
def test_count_admission_holds_a_job_that_names_its_nodes(tmp_path, admission, req_nodes, priority, held):
    if LUA is None:
        pytest.skip("lua5.1 not installed")
    script = tmp_path / "job_submit.lua"
    options = confgen.Options(admission=admission)
    script.write_text(confgen.render("job-submit", _inventory(H100_NODES), options))
    given = (("req_nodes", None if req_nodes is None else f'"{req_nodes}"'), ("priority", priority))
    fields = ", ".join(f"{k} = {v}" for k, v in given if v is not None)
    code = f'local SG = dofile("{script}"); print(SG.awaits_nodes({{{fields}}}), SG.await_mark)'
    out = subprocess.run([LUA, "-e", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(held).lower(), "slurm-gpu-awaits-nodes"]


MIXED_NODES = [{"names": "a1", "gpus": "H100-80GB:1"}, {"names": "b1", "gpus": "A100-40GB:1"}]


@pytest.mark.parametrize("request_,tres,recorded", [
    ("gpu:1", "migp:whole:1", "gpu:1"),  # 7g.80gb on one model, 7g.40gb on the other
    ("gpu:20gb:2", "migp:20gb:2", "gpu:20gb:2"),  # 1g.20gb / 3g.20gb
    ("gpu:17gb", "migp:20gb:1", "gpu:17gb:1"),  # the same class: the same alias
    ("gpu:mem=4G", "migp:5gb:1", "gpu:4g:1"),  # 1g.10gb / 1g.5gb
    ("gpu:80gb", "migp:7g.80gb:1", "gpu:7g.80gb:1"),  # one model holds it: its profile
    ("gpu:1g.10gb", "migp:1g.10gb:1", "gpu:1g.10gb:1"),  # a profile both models have
])
def test_count_admission_gives_a_request_of_several_profiles_an_alias(tmp_path, request_, tres, recorded):
    [r] = translate(tmp_path, _inventory(MIXED_NODES), [(request_, None)], admission="counts")
    assert (r["tres"], r["admin_comment"]) == (tres, f"slurm-gpu:{recorded}"), r


def test_the_script_keys_every_size_as_the_aliases_do(tmp_path):
    # job_submit.lua and core.aliases resolve sizes each in their own language: every whole GB agrees.
    from slurm_gpu.core.aliases import candidates_key, cluster_aliases
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import RequestError
    from slurm_gpu.core.requests import parse_gres, resolve
    from slurm_gpu.core.target import gres_type

    nodes = [*MIXED_NODES, {"names": "c1", "gpus": "A30-24GB:1"}, {"names": "d1", "gpus": "H200-141GB:1"}]
    models = [load_catalog().model(n["gpus"].split(":")[0]) for n in nodes]
    aliases = cluster_aliases(models)
    sizes = range(1, 142)
    got = translate(tmp_path, _inventory(nodes), [(f"gpu:{gb}gb", None) for gb in sizes], admission="counts")

    def means(gb, model):
        try:
            return resolve(parse_gres(f"gpu:{gb}gb")[0], model).name
        except RequestError:
            return None

    for gb, r in zip(sizes, got):
        key = candidates_key([means(gb, m) for m in models])
        want = aliases[key] if "|" in key else gres_type(key)
        assert r["tres"] == f"migp:{want}:1", (gb, key, r)


def test_other_gres_kept_and_user_constraint_anded(tmp_path):
    inv = _inventory(H100_NODES)
    r1, r2, r3 = translate(tmp_path, inv, [
        ("gres:gpu:1g.10gb,gres:tmpdisk:10", "ib"),
        ("gres:gpu:1g.10gb:1", "[rack1|rack2]"),
        ("gres:tmpdisk:10", "ib"),
    ])
    assert r1["tres"] == "gres:tmpdisk:10,gres:mig:1" and r1["constraint"] == "ib&mig.1g.10gb.1"
    assert r2["constraint"] == "([rack1|rack2])&mig.1g.10gb.1"
    assert r3 == {"changed": False}


def test_rejections_offline(tmp_path):
    inv = _inventory(H100_NODES)
    got = translate(tmp_path, inv, [
        ("gres:gpu:9g.1gb:1", None), ("gres:gpu:1g.10gb:0", None), ("gres:gpu:1g.10gb:9", None),
        ("gres:gpu:1g.10gb:1,gres:gpu:2g.20gb:1", None), ("gres:mig:4", None),
        ("gres:gpu:1g.10gb:1", "mig.1g.10gb.1"), ("gres:gpu:1g.10gb:1", "ib&mig.7g.80gb.1"),
        ("gres:gpu:7g.80gb:5", None), ("gres:gpu:200gb", None),
    ])
    msgs = [r.get("error", "") for r in got]
    assert "unknown MIG profile '9g.1gb'" in msgs[0] and "1g.10gb" in msgs[0]
    assert "at least 1" in msgs[1]
    assert "at most 8" in msgs[2]
    assert "one MIG profile per job" in msgs[3]
    assert "'mig' gres" in msgs[4]
    assert "mig.*" in msgs[5] and "mig.*" in msgs[6]
    assert "at most 4" in msgs[7]  # four H100 hold four 7g.80gb
    assert "holds" in msgs[8]


def test_same_profile_twice_adds_up(tmp_path):
    [r] = translate(tmp_path, _inventory(H100_NODES), [("gres:gpu:1g.20gb:1,gres:gpu:1g.20gb:2", None)])
    assert r["tres"] == "gres:mig:6" and r["constraint"] == "mig.1g.20gb.3"


@pytest.mark.parametrize("model", ["H100-80GB", "A100-40GB", "A30-24GB", "RTX-PRO-6000-Blackwell-96GB"])
def test_memory_and_whole_gpu_resolution_matches_requests_module(tmp_path, model):
    inv = _inventory([{"names": "n1", "gpus": f"{model}:2"}])
    gpu = load_catalog().model(model)
    sizes = ["4gb", "5gb", "6gb", "10gb", "12gb", "19gb", "20gb", "21gb", "24gb", "40gb", "47gb", "48gb",
             "80gb", "96gb", "9800m", "20000m", "mem=20G", "1t"]
    cases = [(f"gres:gpu:{s}:1", None) for s in sizes] + [("gres:gpu:2", None)]
    got = translate(tmp_path, inv, cases)
    for (text, _), r in zip(cases, got):
        req = parse_gres(text)[0]
        try:
            expected = resolve(req, gpu).name
        except Exception:
            assert "error" in r, (text, r)
            continue
        count = req.count
        assert r.get("admin_comment") == f"slurm-gpu:gpu:{expected}:{count}", (text, r)


def test_heterogeneous_cluster_is_conservative(tmp_path):
    inv = _inventory([{"names": "a[1-2]", "gpus": "A100-40GB:2"}, {"names": "h[1-2]", "gpus": "H100-80GB:2"}])
    r1, r2, r3 = translate(tmp_path, inv, [("gres:gpu:1g.10gb:1", None), ("gres:gpu:1", None),
                                           ("gres:gpu:20gb:1", None)])
    # 1g.10gb is 2 slices on A100-40GB, 1 on H100: the gres count takes the larger.
    assert r1["tres"] == "gres:mig:2" and r1["constraint"] == "mig.1g.10gb.1"
    assert r2["constraint"] == "(mig.7g.40gb.1|mig.7g.80gb.1)" and r2["admin_comment"] == "slurm-gpu:gpu:1"
    assert r3["constraint"] == "(mig.3g.20gb.1|mig.1g.20gb.1)" and r3["tres"] == "gres:mig:4"


def test_static_types_pass_through(tmp_path):
    inv = _inventory(H100_NODES + [{"names": "s1", "gpus": "A100-40GB:1", "mode": "static",
                                    "type_prefix": "a100_", "layout": ["3g.20gb@1"]}])
    [r] = translate(tmp_path, inv, [("gres:gpu:a100_3g.20gb:1", None)])
    assert r == {"changed": False}


# --- the real slurmctld ---------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.parametrize("gres,constraint,mig", [
    ("gpu:1g.10gb", "mig.1g.10gb.1", "gres:mig:1"),
    ("gpu:3g.40gb:2", "mig.3g.40gb.2", "gres:mig:8"),
    ("gpu:2", "mig.7g.80gb.2", "gres:mig:16"),
    ("gpu:20gb", "mig.1g.20gb.1", "gres:mig:2"),
])
def test_accepted_and_rewritten(slurm_cluster, gres, constraint, mig):
    proc = slurm_cluster.sbatch(f"--gres={gres}", "--comment=slurm-gpu:gpu:7g.80gb:1", wrap="true")
    assert proc.returncode == 0, proc.stderr
    info = slurm_cluster.wait_job(proc.stdout.strip())
    assert info["JobState"] == "COMPLETED"
    assert info["Features"] == constraint
    assert info["TresPerNode"] == mig
    profile = constraint.split(".", 1)[1].rsplit(".", 1)[0]
    count = constraint.rsplit(".", 1)[1]
    # The admin comment holds what was asked; the user's own comment is not trusted for it.
    assert info["AdminComment"] == f"slurm-gpu:gpu:{profile}:{count}"
    assert info["Comment"] == "slurm-gpu:gpu:7g.80gb:1"


@pytest.mark.slurm
@pytest.mark.parametrize("args,message", [
    (["--gres=gpu:9g.1gb"], "unknown MIG profile '9g.1gb'"),
    (["--gres=gpu:1g.10gb:0"], "count must be at least 1"),
    (["--gres=gpu:1g.10gb:9"], "at most 8 instance(s) of 1g.10gb"),
    (["--gres=gpu:7g.80gb:5"], "at most 4 instance(s) of 7g.80gb"),
    (["--gres=gpu:1g.10gb,gpu:2g.20gb"], "one MIG profile per job"),
    (["--gres=mig:4"], "'mig' gres is managed by slurm-gpu"),
    (["--constraint=mig.1g.10gb.1"], "node features mig.* are managed"),
    (["--gres=gpu:1g.10gb", "--constraint=mig.7g.80gb.1"], "node features mig.* are managed"),
    (["--gpus=1g.10gb:1"], "use --gres=gpu:<profile>"),
    (["--gres=gpu:300gb"], "no MIG profile on this cluster holds 300gb"),
])
def test_rejected_with_message(slurm_cluster, args, message):
    proc = slurm_cluster.sbatch(*args, user="sgtest2")
    assert proc.returncode != 0
    assert "slurm-gpu: " in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.slurm
def test_user_cannot_change_features_later(slurm_cluster):
    proc = slurm_cluster.sbatch("--hold", "--gres=gpu:1g.10gb")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    try:
        upd = slurm_cluster.run(["scontrol", "update", f"job={job_id}", "features=mig.7g.80gb.1"],
                                user="sgtest1")
        assert upd.returncode != 0
        assert slurm_cluster.job(job_id)["Features"] == "mig.1g.10gb.1"
    finally:
        slurm_cluster.run(["scancel", job_id])
