"""The state journal's kprobe entries (tlbprobe/sysstate.py), on a stand-in tracefs tree.

The real path runs in a Linux 6.1 guest (tests/test_qemu.py): this host's kernel has no
kprobe events. Here: what a run killed with SIGKILL leaves, and what `restore` does with it.
"""

from __future__ import annotations

import json

from tlbprobe.sysstate import SystemState, restore_from_journal


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
    assert restore_from_journal(tmp_path / "state", log=said.append) == 1
    assert (root / "kprobe_events").read_text().endswith("-:tlbprobe_77/tlb_remove_table_smp_sync\n")
    assert [p.read_text() for p in root.rglob("enable")] == ["0", "0"]
    assert "tlbprobe_77/tlb_remove_table_smp_sync" in said[0]
    assert not (tmp_path / "state" / "journal.json").exists()
