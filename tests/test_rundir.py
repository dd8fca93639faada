"""The run directory writer: atomic files, appended CSVs, ownership for sudo users."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tlbprobe.errors import InputError
from tlbprobe.rundir import FORMAT, RunDir, read_summary


def test_csv_rows_append_and_load_with_pandas(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    rd.append_csv("x.csv", ["a", "b"], [[1, "one"]])
    rd.append_csv("x.csv", ["a", "b"], [[2, "two, with a comma"]])
    df = pd.read_csv(rd.path / "x.csv")
    assert list(df.a) == [1, 2] and df.b[1] == "two, with a comma"


def test_json_is_replaced_whole_and_leaves_no_temporary(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    rd.write_json("summary.json", {"format": FORMAT, "complete": False})
    rd.write_json("summary.json", {"format": FORMAT, "complete": True})
    assert json.loads((rd.path / "summary.json").read_text())["complete"] is True
    assert sorted(p.name for p in rd.path.iterdir()) == ["snapshots", "summary.json"]
    assert read_summary(rd.path)["complete"] is True


def test_an_existing_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        RunDir.create(tmp_path / "run")


def test_foreign_or_damaged_summary_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        read_summary(tmp_path / "nope")
    (tmp_path / "summary.json").write_text("{broken")
    with pytest.raises(InputError, match="summary.json: damaged"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text('{"format": "other/9"}')
    with pytest.raises(InputError, match="not a tlbprobe-run/1 summary"):
        read_summary(tmp_path)


@pytest.mark.root
def test_run_directory_goes_to_the_sudo_user(tmp_path, monkeypatch):
    rd = RunDir.create(tmp_path / "run")
    rd.write_json("summary.json", {"format": FORMAT})
    rd.save_snapshot("r0-idle-before.interrupts", "CPU0\n")
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65534")
    assert rd.chown_to_invoker() == "65534"
    for p in [rd.path, rd.path / "summary.json", rd.path / "snapshots", rd.path / "snapshots" / "r0-idle-before.interrupts"]:
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (65534, 65534), p


def test_a_parent_other_users_can_write_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(InputError, match="writable by users other than root and you"):
        RunDir.create(shared / "run")
    assert not (shared / "run").exists()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what is ours
    RunDir.create(shared / "run")


def test_a_symlink_where_the_run_should_be_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").symlink_to(elsewhere)
    with pytest.raises(InputError, match="not empty \\(or not a directory\\)"):
        RunDir.create(tmp_path / "run")


def test_files_planted_as_symlinks_inside_the_run_are_not_followed(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (rd.path / "log.txt").symlink_to(victim)
    (rd.path / "summary.json").symlink_to(victim)
    with pytest.raises(OSError):
        rd.log("a line")
    rd.write_json("summary.json", {"format": FORMAT})  # replaces the link itself, never writes through it
    assert victim.read_text() == "untouched\n" and not (rd.path / "summary.json").is_symlink()
    assert [p.name for p in rd.path.iterdir() if p.name.endswith(".tmp")] == []
