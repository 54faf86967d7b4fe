"""Parsing of what Slurm prints, against outputs recorded from real daemons (tests/fixtures/slurm/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurm_gpu.core.errors import BadInputError, RequestError, SlurmError
from slurm_gpu.slurm.parse import (
    GresCount,
    MigRequest,
    expand_hostlist,
    format_admin_comment,
    gres_total,
    job_by_id,
    job_from_json,
    job_from_scontrol_text,
    jobs_from_json,
    parse_admin_comment,
    parse_gres_counts,
    parse_job_state,
    parse_scontrol_pairs,
)

FIX = Path(__file__).parents[1] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("gres:mig:4", (GresCount("mig", None, 4),)),  # 22.05 tres_per_node
        ("gres/mig:4", (GresCount("mig", None, 4),)),  # 24.11+
        ("gres/mig=4", (GresCount("mig", None, 4),)),  # TRES form
        ("mig(CNT:4)", (GresCount("mig", None, 4),)),  # count-only gres_detail (recorded, 22.05)
        ("gpu:1g.10gb:2(IDX:3-4)", (GresCount("gpu", "1g.10gb", 2),)),
        ("gpu:2(IDX:0,2)", (GresCount("gpu", None, 2),)),
        ("gres:gpu:3g.40gb:1,gres:mig:8", (GresCount("gpu", "3g.40gb", 1), GresCount("mig", None, 8))),
        ("cpu=2,mem=4000M,node=1,billing=2,gres/mig=3", (GresCount("mig", None, 3),)),
        ("license/matlab=1,gres/gpu:1g.10gb=2", (GresCount("gpu", "1g.10gb", 2),)),
        ("gres/shard:2k", (GresCount("shard", None, 2048),)),
        ("gres:gpu", (GresCount("gpu", None, 1),)),
        ("", ()),
        ("(null)", ()),
    ],
)
def test_parse_gres_counts_forms(text, expected):
    assert parse_gres_counts(text) == expected


def test_bad_gres_count_is_refused_with_the_part():
    with pytest.raises(RequestError) as exc:
        parse_gres_counts("gres:mig:four:x")
    assert exc.value.part == "x"


def test_gres_total_counts_typed_and_untyped_once():
    # AllocTRES lists both gres/gpu=2 and gres/gpu:1g.10gb=2 for the same two units.
    counts = parse_gres_counts("gres/gpu=2,gres/gpu:1g.10gb=2,gres/mig=5")
    assert gres_total(counts, "gpu") == 2
    assert gres_total(counts, "mig") == 5
    assert gres_total(counts, "shard") == 0


@given(st.sampled_from(["gres:", "gres/", ""]), st.integers(1, 10**6))
def test_count_round_trip(prefix, n):
    assert gres_total(parse_gres_counts(f"{prefix}mig:{n}"), "mig") == n


def test_admin_comment():
    assert parse_admin_comment("slurm-gpu:gpu:1g.10gb:2") == MigRequest("1g.10gb", 2)
    assert parse_admin_comment("slurm-gpu:gpu:1g.10gb+me:1 slurm-gpu-requeued:raced") == MigRequest(
        "1g.10gb+me", 1)
    assert parse_admin_comment("") is None
    assert parse_admin_comment("something else") is None
    req = MigRequest("3g.40gb", 2)
    assert parse_admin_comment(format_admin_comment(req)) == req
    with pytest.raises(BadInputError):
        parse_admin_comment("slurm-gpu:gpu:1g.10gb:1 slurm-gpu:gpu:7g.80gb:1")
    with pytest.raises(BadInputError):
        parse_admin_comment("slurm-gpu:gpu:1g.10gb:0")


def test_admin_comment_of_mixed_model_clusters():
    # job_submit.lua records a memory size, or whole GPUs, when the cluster's models resolve it differently
    assert parse_admin_comment("slurm-gpu:gpu:20gb:1") == MigRequest("20gb", 1)
    assert parse_admin_comment("slurm-gpu:gpu:2 slurm-gpu-requeued:raced") == MigRequest("", 2)
    assert format_admin_comment(MigRequest("", 2)) == "slurm-gpu:gpu:2"
    with pytest.raises(BadInputError):
        parse_admin_comment("slurm-gpu:gpu:2 slurm-gpu:gpu:1g.10gb:1")


@pytest.mark.parametrize(
    "value,base,flags",
    [
        ("RUNNING", "RUNNING", ()),
        ("COMPLETING", "COMPLETING", ()),
        (["RUNNING", "COMPLETING"], "RUNNING", ("COMPLETING",)),
        (["PENDING", "REQUEUED"], "PENDING", ("REQUEUED",)),
        (["COMPLETED"], "COMPLETED", ()),
    ],
)
def test_job_state(value, base, flags):
    assert parse_job_state(value) == (base, flags)


def test_job_state_garbage():
    with pytest.raises(SlurmError):
        parse_job_state(None)
    with pytest.raises(SlurmError):
        parse_job_state([])


def test_hostlist():
    assert expand_hostlist("rn[1-2]") == ("rn1", "rn2")
    assert expand_hostlist("n[01-03,7],gpu5") == ("n01", "n02", "n03", "n7", "gpu5")
    assert expand_hostlist("a[8-10]b") == ("a8b", "a9b", "a10b")
    assert expand_hostlist("") == ()
    assert expand_hostlist("(null)") == ()


def test_scontrol_pairs_keep_spaces_in_values():
    pairs = parse_scontrol_pairs("Reason=Resources Comment=hello world X=1")
    assert pairs == {"Reason": "Resources", "Comment": "hello world", "X": "1"}


def test_scontrol_running_job_22_05():
    job = job_from_scontrol_text(fixture("scontrol_show_job_d_22.05_running.txt"))
    assert job.job_id == 1
    assert job.state == "RUNNING" and job.active
    assert job.user_id == 0
    assert job.nodes == ("rn1",)
    assert job.request() == MigRequest("1g.10gb", 1)
    assert job.tres_per_node == "gres:mig:1"
    assert job.mig_slices_per_node("rn1") == 1
    assert job.features == "mig.1g.10gb.1"


def test_scontrol_comment_with_equals_does_not_leak_into_fields():
    job = job_from_scontrol_text(fixture("scontrol_show_job_d_22.05_running.txt"))
    # The user's comment "user says hi = yes" must not become the admin comment or a field.
    assert "user" not in job.admin_comment


def test_scontrol_multinode_detail_22_05():
    job = job_from_scontrol_text(fixture("scontrol_show_job_d_22.05_multinode.txt"))
    assert job.nodes == ("rn1", "rn2")
    assert dict(job.gres_by_node) == {"rn1": "mig(CNT:4)", "rn2": "mig(CNT:4)"}
    assert job.mig_slices_per_node("rn2") == 4
    assert job.request() == MigRequest("3g.40gb", 1)


def test_scontrol_one_line_form_falls_back_to_tres_per_node():
    job = job_from_scontrol_text(fixture("scontrol_show_job_do_22.05_multinode.txt"))
    assert job.job_id == 2 and job.nodes == ("rn1", "rn2")
    assert job.mig_slices_per_node("rn1") == 4
    assert job.request() == MigRequest("3g.40gb", 1)


def test_scontrol_pending_job():
    job = job_from_scontrol_text(fixture("scontrol_show_job_d_22.05_pending.txt"))
    assert job.state == "PENDING" and not job.active
    assert job.nodes == ()
    assert job.mig_slices_per_node() == 8
    assert job.request() == MigRequest("7g.80gb", 1)


def test_scontrol_without_jobid_is_an_error():
    with pytest.raises(SlurmError):
        job_from_scontrol_text("slurm_load_jobs error: Invalid job id specified\n")


def test_squeue_json_22_05():
    jobs = {j.job_id: j for j in jobs_from_json(json.loads(fixture("squeue_json_22.05.json")))}
    assert set(jobs) == {1, 2, 3}
    assert jobs[2].nodes == ("rn1", "rn2")
    assert jobs[2].mig_slices_per_node("rn1") == 4
    assert jobs[2].request() == MigRequest("3g.40gb", 1)
    assert jobs[3].state == "PENDING" and jobs[3].mig_slices_per_node() == 8
    assert jobs[1].active and not jobs[3].active


def test_json_24_11_number_objects_and_state_lists():
    obj = {
        "job_id": 42,
        "job_state": ["RUNNING"],
        "user_id": 1001,
        "nodes": "n[1-2]",
        "admin_comment": "slurm-gpu:gpu:1g.10gb:2",
        "tres_per_node": "gres/mig:2",
        "gres_detail": ["mig(CNT:2)", "mig(CNT:2)"],
        "restart_cnt": {"set": True, "infinite": False, "number": 3},
    }
    job = job_from_json(obj)
    assert job.job_id == 42 and job.state == "RUNNING" and job.restart_count == 3
    assert job.mig_slices_per_node("n2") == 2
    assert job.request() == MigRequest("1g.10gb", 2)


def test_json_document_without_jobs_is_an_error():
    with pytest.raises(SlurmError):
        jobs_from_json({"errors": ["boom"]})


# --- Slurm 24.11.5 (Debian trixie), recorded the same way ---------------------------------------------


def test_scontrol_24_11_running_and_pending():
    run = job_from_scontrol_text(fixture("scontrol_show_job_d_24.11_running.txt"))
    assert run.state == "RUNNING" and run.nodes == ("tn1",)
    assert run.tres_per_node == "gres/mig:1" and run.mig_slices_per_node("tn1") == 1
    assert run.request() == MigRequest("1g.10gb", 1)
    pend = job_from_scontrol_text(fixture("scontrol_show_job_d_24.11_pending.txt"))
    assert pend.state == "PENDING" and pend.nodes == () and pend.mig_slices_per_node() == 8


def test_scontrol_24_11_compressed_detail_line():
    # 24.11 prints one "Nodes=tn[1-2] ... GRES=mig(CNT:4)" line for nodes with the same allocation.
    job = job_from_scontrol_text(fixture("scontrol_show_job_d_24.11_multinode.txt"))
    assert dict(job.gres_by_node) == {"tn1": "mig(CNT:4)", "tn2": "mig(CNT:4)"}
    assert job.request() == MigRequest("3g.40gb", 1)


@pytest.mark.parametrize("name", ["squeue_json_24.11.json", "scontrol_show_job_json_24.11.json"])
def test_json_24_11(name):
    jobs = jobs_from_json(json.loads(fixture(name)))
    job = {j.job_id: j for j in jobs}[2]
    assert job.state == "RUNNING" and job.active
    assert job.nodes == ("tn1", "tn2")
    assert job.mig_slices_per_node("tn2") == 4
    assert job.request() == MigRequest("3g.40gb", 1)
    assert job.user_id == 0 and job.restart_count == 0


@pytest.mark.parametrize("name", ["squeue_json_22.05.json", "scontrol_show_job_json_24.11.json"])
def test_job_by_id_takes_only_that_job(name):
    doc = json.loads(fixture(name))
    assert job_by_id(doc, 2).job_id == 2
    # Another job's unreadable content cannot fail the read of this one.
    doc["jobs"][0]["job_state"] = {"nonsense": True}
    assert job_by_id(doc, 3).job_id == 3
    with pytest.raises(SlurmError, match="0 jobs with id 99"):
        job_by_id(doc, 99)
    doc["jobs"].append(dict(doc["jobs"][2]))
    with pytest.raises(SlurmError, match="2 jobs with id 3"):
        job_by_id(doc, 3)
    with pytest.raises(SlurmError, match="no 'jobs' list"):
        job_by_id({"jobs": None}, 3)


# --- one job from squeue -O (Slurm before 23.02) ------------------------------------------------------
def test_one_job_from_squeue_fields_as_22_05_prints_them():
    from slurm_gpu.slurm.parse import SQUEUE_JOB_FORMAT, job_from_squeue_line

    assert SQUEUE_JOB_FORMAT.startswith("JobID:0\x1f,State:0\x1f,") and SQUEUE_JOB_FORMAT.endswith(
        ",admin_comment:0")
    # as squeue 22.05.8 printed them (cat -A: ^_ is the separator)
    line = "1860001\x1fRUNNING\x1f1001\x1fsg18600n[1-2]\x1fgres:migp:3g.40gb:2\x1fslurm-gpu:gpu:3g.40gb:2\n"
    job = job_from_squeue_line(line, 1860001)
    assert (job.state, job.user_id, job.nodes) == ("RUNNING", 1001, ("sg18600n1", "sg18600n2"))
    assert job.typed_counts_per_node("migp", "sg18600n2") == {"3g.40gb": 2}
    assert job.request() is not None and job.request().count == 2
    pending = job_from_squeue_line("1860006\x1fPENDING\x1f1001\x1f\x1fN/A\x1f(null)\n", 1860006)
    assert (pending.nodes, pending.tres_per_node, pending.admin_comment) == ((), "", "")
    # `--jobs=<leader>` of a heterogeneous job lists every component, each under its own id
    het = ("2200120\x1fRUNNING\x1f1001\x1fn2\x1fgres:migp:1g.10gb:1\x1fslurm-gpu:gpu:1g.10gb:1\n"
           "2200119\x1fRUNNING\x1f1001\x1fn1\x1fgres:migp:3g.40gb:1\x1fslurm-gpu:gpu:3g.40gb:1\n")
    assert job_from_squeue_line(het, 2200119).nodes == ("n1",)
    assert job_from_squeue_line(het, 2200120).admin_comment == "slurm-gpu:gpu:1g.10gb:1"


@pytest.mark.parametrize("text,why", [
    ("", "0 lines"),
    ("7\x1fRUNNING\x1f1001\x1fn1\x1fN/A\x1f(null)\n7\x1fRUNNING\x1f1001\x1fn2\x1fN/A\x1f(null)\n", "2 lines"),
    ("8\x1fRUNNING\x1f1001\x1fn1\x1fN/A\x1f(null)\n", "0 lines"),
    ("7\x1fRUNNING\x1fx\x1fn1\x1fN/A\x1f(null)\n", "user id"),
    # a separator smuggled into a field shifts the admin comment: refused, never read
    ("7\x1fRUNNING\x1f1001\x1fn1\x1fgres:shard:1\x1fslurm-gpu:gpu:7g.80gb:1\x1fslurm-gpu:gpu:1g.10gb:1\n",
     "fields"),
    ("7\x1fRUNNING\x1f1001\x1fn1\x1fgres:shard:1 x\x1f(null)\n", "not a gres list"),
])
def test_a_malformed_squeue_line_is_refused(text, why):
    from slurm_gpu.slurm.parse import job_from_squeue_line

    with pytest.raises(SlurmError, match=why):
        job_from_squeue_line(text, 7)


def test_the_pending_queue_as_squeue_prints_it():
    from slurm_gpu.slurm.parse import pending_from_squeue

    sep = "\x1f"
    text = (f"1760008{sep}0{sep}JobHeldUser{sep}sg1n[1-2]{sep}gres:migp:1g.10gb:1{sep}"
            f"slurm-gpu:gpu:1g.10gb:1 slurm-gpu-awaits-nodes\n"
            f"1760009_2{sep}4294901754{sep}Resources{sep}{sep}gres:migp:2g.20gb:1{sep}\n")
    held, task = pending_from_squeue(text)
    assert (held.job_id, held.held, held.reason, held.req_nodes) == ("1760008", True, "JobHeldUser",
                                                                      ("sg1n1", "sg1n2"))
    assert held.admin_comment == "slurm-gpu:gpu:1g.10gb:1 slurm-gpu-awaits-nodes"
    assert (task.job_id, task.held, task.req_nodes, task.tres_per_node, task.admin_comment) == (
        "1760009_2", False, (), "gres:migp:2g.20gb:1", "")


@pytest.mark.parametrize("line", ["x1\x1f0\x1fR\x1f\x1fgres:migp:1g.10gb:1\x1f",  # not a job id
                                  "5\x1f0\x1fR\x1f\x1fgres:migp:1g.10gb:1",  # a field short
                                  "5\x1f0\x1fR\x1f\x1fgres:migp:1g.10gb:1;x\x1f"])  # not a gres list
def test_a_malformed_pending_line_is_refused(line):
    from slurm_gpu.slurm.parse import pending_from_squeue

    with pytest.raises(SlurmError):
        pending_from_squeue(line)
