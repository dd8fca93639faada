"""The state journal's kprobe entries (tlbprobe/measure/sysstate.py), on a stand-in tracefs tree.

The real path runs in a Linux 6.1 guest (tests/test_qemu.py): this host's kernel has no
kprobe events. Here: what a run killed with SIGKILL leaves, and what `restore` does with it.
"""

from __future__ import annotations

import json

import os

import pytest

from tlbprobe.errors import PreflightError, TlbprobeError
from tlbprobe.measure.sysstate import AllowList, Change, SystemState, restore_from_journal


def fake_tracefs(tmp_path, name="tlbprobe_77/tlb_remove_table_smp_sync"):
    root = tmp_path / "tracing"
    for enable in (root / "events" / name / "enable", root / "instances" / "tlbprobe-77" / "events" / name / "enable"):
        enable.parent.mkdir(parents=True)
        enable.write_text("1")
    (root / "kprobe_events").write_text("")
    return root


def test_a_killed_runs_kprobe_is_disabled_everywhere_then_removed_by_restore(tmp_path):
    root = fake_tracefs(tmp_path)
    state = SystemState(tmp_path / "state")
    state.add_kprobe(root / "kprobe_events", "tlbprobe_77", "tlb_remove_table_smp_sync")
    assert (root / "kprobe_events").read_text() == "p:tlbprobe_77/tlb_remove_table_smp_sync tlb_remove_table_smp_sync\n"
    journal = json.loads((tmp_path / "state" / "journal.json").read_text())
    assert journal["changes"][-1]["kind"] == "kprobe"
    journal["pid"] = 2 ** 22 + 1  # as if its process was gone (SIGKILL): no __exit__ ran
    (tmp_path / "state" / "journal.json").write_text(json.dumps(journal))
    said = []
    allow = AllowList(tracefs=(str(root),))
    assert restore_from_journal(tmp_path / "state", log=said.append, allow=allow) == 1
    assert (root / "kprobe_events").read_text().endswith("-:tlbprobe_77/tlb_remove_table_smp_sync\n")
    assert [p.read_text() for p in root.rglob("enable")] == ["0", "0"]
    assert "tlbprobe_77/tlb_remove_table_smp_sync" in said[0]
    assert not (tmp_path / "state" / "journal.json").exists()


def test_restore_undoes_only_what_tlbprobe_itself_changes(tmp_path):
    """A journal is a file: an entry naming anything but tlbprobe's own knobs is refused and
    left untouched, and the journal is kept aside (it no longer blocks new runs)."""
    victim = tmp_path / "etc-shadow"
    victim.write_text("secret\n")
    keep = tmp_path / "keep"
    keep.mkdir()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    entries = [Change("write", str(victim), "pwned", "x").__dict__, Change("mkdir", str(keep)).__dict__,
               Change("mount", "/").__dict__, Change("write", "/sys/kernel/mm/transparent_hugepage/../../../x", "1").__dict__,
               {"kind": "write"}]
    (state / "journal.json").write_text(json.dumps({"pid": 2 ** 22 + 1, "changes": entries}))
    with pytest.raises(TlbprobeError, match="refused 5 journal entries"):
        restore_from_journal(state, log=lambda s: None)
    assert victim.read_text() == "secret\n" and keep.is_dir()
    assert not (state / "journal.json").exists() and (state / "journal.refused.json").exists()
    allow = AllowList()
    assert allow.permits(Change("write", "/sys/kernel/mm/transparent_hugepage/enabled", "madvise"))
    assert allow.permits(Change("write", "/proc/sys/vm/nr_hugepages", "0"))
    assert allow.permits(Change("mkdir", "/sys/kernel/tracing/instances/tlbprobe-42"))
    assert allow.permits(Change("kprobe", "/sys/kernel/tracing/kprobe_events", None, "tlbprobe_42/flush_tlb_func"))
    assert not allow.permits(Change("kprobe", "/sys/kernel/tracing/kprobe_events", None, "other/probe"))


def test_a_state_directory_others_can_write_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    with pytest.raises(PreflightError, match="not group- or world-writable"):
        SystemState(state).__enter__()
    with pytest.raises(PreflightError, match="chmod 700"):
        restore_from_journal(state, log=lambda s: None)
