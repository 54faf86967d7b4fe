"""Capability minors: the one formula, the file the simulator writes with it, and reading that file back."""

from __future__ import annotations

from slurm_gpu.devices.migminors import (
    MAX_CI_ID,
    MAX_GI_ID,
    MigMinors,
    access_key,
    ci_cap_minor,
    gi_cap_minor,
    mig_minors_text,
    read_mig_minors,
    remember,
)


def test_pattern_of_the_driver():
    # the pattern seen in /proc/driver/nvidia-caps/mig-minors, e.g. "gpu0/gi1/access 12"
    assert gi_cap_minor(0, 1) == 12
    assert ci_cap_minor(0, 1, 0) == 13
    assert gi_cap_minor(1, 0) == 138


def test_written_file_reads_back_as_the_pattern(tmp_path):
    path = tmp_path / "mig-minors"
    path.write_text(mig_minors_text([1, 0]), encoding="ascii")
    table = read_mig_minors(str(path))
    assert table["config"] == 1 and table["monitor"] == 2
    assert len(table) == 2 + 2 * (MAX_GI_ID + 1) * (MAX_CI_ID + 2)
    minors = MigMinors(str(path))
    for gpu in (0, 1):
        for gi in range(MAX_GI_ID + 1):
            assert minors.cap_minor(gpu, gi) == table[access_key(gpu, gi)] == gi_cap_minor(gpu, gi)
            for ci in range(MAX_CI_ID + 1):
                assert minors.cap_minor(gpu, gi, ci) == ci_cap_minor(gpu, gi, ci)
    assert minors.of_gpu(1) == tuple(sorted(m for k, m in table.items() if k.startswith("gpu1/")))
    assert set(minors.of_gpu(0)).isdisjoint(minors.of_gpu(1))


def test_unreadable_file_knows_nothing(tmp_path):
    for path in (None, "", str(tmp_path / "missing")):
        minors = MigMinors(path)
        assert minors.cap_minor(0, 1, 0) is None
        assert minors.of_gpu(0) == ()


def test_a_parse_is_reused_only_for_the_same_bytes(tmp_path):
    path = tmp_path / "mig-minors"
    path.write_text(mig_minors_text([0]), encoding="ascii")
    remember(str(path))  # what the hook server does before it forks
    assert MigMinors(str(path)).of_gpu(1) == ()
    read_mig_minors(str(path)).clear()  # a caller's copy: the remembered parse is untouched
    assert MigMinors(str(path)).cap_minor(0, 1) == gi_cap_minor(0, 1)
    path.write_text(mig_minors_text([0, 1]), encoding="ascii")  # the driver reloaded with another GPU
    fresh = MigMinors(str(path))
    assert fresh.cap_minor(1, 2, 3) == ci_cap_minor(1, 2, 3)
    assert len(fresh.of_gpu(1)) == (MAX_GI_ID + 1) * (MAX_CI_ID + 2)
