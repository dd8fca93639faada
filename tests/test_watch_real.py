"""`tlbprobe watch` on the real kernel (root): exact counts and origins beside a real
MADV_COLLAPSE in another process, an idle watch, the clean and unclean ends, SIGHUP,
bad input, and Prometheus scraping the watcher and answering through its HTTP API.

Each test runs a watch for a few seconds (interval 1 s); none runs two measurements at
once. Run them alone: pytest -k watch_real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from conftest import needs_csd_events, system_state

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
HELPER = REPO / "tests" / "collapse_helper.py"
WATCH_JOURNAL = Path("/run/tlbprobe/watch/journal.json")
TRACEFS = Path("/sys/kernel/tracing")

pytestmark = [pytest.mark.root, needs_csd_events]


def tlbprobe(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "tlbprobe", *args], cwd=REPO, capture_output=True, text=True, timeout=120, **kw)


@contextmanager
def watching(out: Path, *args: str) -> Iterator[subprocess.Popen]:
    """A watch in its own process, yielded once its counters are open (watch.yaml is
    written after them); SIGTERM on the way out if it still runs."""
    proc = subprocess.Popen([PY, "-m", "tlbprobe", "watch", "--out", str(out), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out / "watch.yaml").exists():
            if proc.poll() is not None:
                raise AssertionError(f"watch ended early: {proc.communicate()}")
            assert time.monotonic() < deadline, "watch did not start in 30 s"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def records(out: Path) -> List[Dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def summary(out: Path) -> Dict:
    return json.loads((out / "summary.json").read_text())


def check_sums(recs: List[Dict]) -> None:
    """The rule of every record: origins (unattributed included) add up to the exact count."""
    for r in recs:
        assert sum(r["by_origin"].values()) == r["broadcasts"], r


def test_watch_counts_a_real_madv_collapse_by_origin_and_process(tmp_path):
    out = tmp_path / "w"
    with watching(out, "--interval", "1", "--duration", "8") as proc:
        time.sleep(1.5)
        helper = subprocess.run([PY, str(HELPER), "64", "--name", "tlbp-collapser"], capture_output=True,
                                text=True, timeout=60, check=True)
        done = json.loads(helper.stdout)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert done["huge_pmds"] == 32, done
    assert done["collapsed"] >= 32  # system-wide: khugepaged may collapse someone else's meanwhile
    recs = records(out)
    check_sums(recs)
    madv = sum(r["by_origin"]["madv_collapse"] for r in recs)
    ours = sum(p["count"] for r in recs for p in r["processes"]
               if p["origin"] == "madv_collapse" and p["pid"] == done["pid"] and p["comm"] == "tlbp-collapser")
    assert ours == madv == done["huge_pmds"], (ours, madv, done)
    # the kernel's count while it ran: the same, unless another process collapsed meanwhile
    # (khugepaged; a file collapse counts there too and sends no sync)
    assert done["collapsed"] >= madv, (madv, done)
    total = sum(r["broadcasts"] for r in recs)
    others = {o: sum(r["by_origin"][o] for r in recs) for o in recs[0]["by_origin"] if o != "madv_collapse"}
    assert total == madv + sum(others.values())
    assert others["unattributed"] == 0, others
    # IPIs: one sync call per other CPU per broadcast, exactly
    n_other = len(recs[0]["online"]) - 1
    assert sum(r["ipis"] for r in recs) == total * n_other
    s = summary(out)
    assert s["complete"] and s["totals"]["by_origin"]["madv_collapse"] == madv
    assert s["totals"]["madv_collapse_by_process"]["tlbp-collapser"] == madv
    assert "tlbp-collapser" in stdout  # the final lines name the process


def test_watch_beside_collect_equals_collects_own_traced_count(tmp_path):
    """A collect (its own journal, trace instance and counter) runs while the watch runs:
    the watch's MADV_COLLAPSE count for collect's process equals collect's traced sync
    calls queued for the other CPUs, divided by their number."""
    out = tmp_path / "w"
    with watching(out, "--interval", "1", "--duration", "12") as proc:
        time.sleep(1.5)
        coll = subprocess.Popen([PY, "-m", "tlbprobe", "collect", "--workload", "collapse", "--size", "64M",
                                 "--repeat", "1", "--idle-seconds", "0", "--out", str(tmp_path / "c"), "-q"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        c_out, c_err = coll.communicate(timeout=120)
        assert coll.returncode == 0, c_err
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    run = json.loads((tmp_path / "c" / "summary.json").read_text())
    traced = run["queued"]["tlb_remove_table_smp_sync"]
    recs = records(out)
    check_sums(recs)
    by_collect = sum(p["count"] for r in recs for p in r["processes"]
                     if p["origin"] == "madv_collapse" and p["pid"] == coll.pid)
    assert by_collect * (len(recs[0]["online"]) - 1) == traced == run["ops"] * len(run["other_cpus"]), \
        (by_collect, traced, run["ops"])


def test_idle_watch_counts_no_broadcast_of_its_own(tmp_path):
    """Nothing started: no MADV_COLLAPSE, no hugetlb unshare, nothing unattributed; the
    only broadcasts an idle watch may see here are khugepaged's for other processes (QEMU
    guests' memory is MADV_HUGEPAGE), and those are named. Its own calls: at most one per
    other CPU per interval, plus the few of its start."""
    out = tmp_path / "w"
    with watching(out, "--interval", "1", "--duration", "5") as proc:
        proc.communicate(timeout=60)
    recs = records(out)
    check_sums(recs)
    for r in recs:
        assert r["by_origin"]["madv_collapse"] == r["by_origin"]["hugetlb_pmd_unshare"] == 0, r
        assert r["by_origin"]["unattributed"] == 0, r
        assert r["broadcasts"] == r["by_origin"]["khugepaged"] + r["by_origin"]["other"] + \
            r["by_origin"]["pt_free_fallback"]
    own_per_interval = [sum(r["own"].values()) for r in recs[1:]]
    assert max(own_per_interval) <= 3 * (len(recs[0]["online"]) - 1), own_per_interval
    assert all(r["cal_less_own"][c] == r["cal"][c] - r["own"][c] for r in recs for c in r["cal"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_leaves_a_complete_watch_and_restored_tracefs(tmp_path, sig):
    before = system_state()
    out = tmp_path / "w"
    with watching(out, "--interval", "1") as proc:
        assert WATCH_JOURNAL.exists()
        assert any(n.startswith("tlbprobe-watch-") for n in os.listdir(TRACEFS / "instances"))
        time.sleep(2.5)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"watch complete (stopped by {sig.name})" in stdout
    s = summary(out)
    assert s["complete"] is True and s["state"] == "complete" and s["restored"] is True
    assert s["totals"]["intervals"] == len(records(out)) >= 2
    assert not WATCH_JOURNAL.exists()
    assert system_state() == before


def test_sigkill_leaves_it_incomplete_and_restore_undoes_it(tmp_path):
    before = system_state()
    out = tmp_path / "w"
    with watching(out, "--interval", "1") as proc:
        time.sleep(1.5)
        proc.kill()
        proc.wait()
    s = summary(out)
    assert s["complete"] is False and s["state"] == "running"
    assert WATCH_JOURNAL.exists()
    left = [n for n in os.listdir(TRACEFS / "instances") if n == f"tlbprobe-watch-{proc.pid}"]
    assert left, "the killed watch's instance should still be there"
    again = tlbprobe("watch", "--duration", "2", "--out", str(tmp_path / "w2"))
    assert again.returncode == 3 and "tlbprobe restore" in again.stderr and not (tmp_path / "w2").exists()
    res = tlbprobe("restore")
    assert res.returncode == 0, res.stderr
    assert f"tlbprobe-watch-{proc.pid}" in res.stdout
    assert not WATCH_JOURNAL.exists()
    assert system_state() == before


def test_sighup_reopens_the_records_for_logrotate(tmp_path):
    out = tmp_path / "w"
    with watching(out, "--interval", "1") as proc:
        time.sleep(2.5)
        os.rename(out / "records.jsonl", out / "records.jsonl.1")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    old = [json.loads(x) for x in (out / "records.jsonl.1").read_text().splitlines()]
    new = records(out)
    assert old and new
    assert [r["seq"] for r in old + new] == list(range(len(old) + len(new)))
    assert "SIGHUP: reopened" in (out / "log.txt").read_text()


@pytest.mark.parametrize("args, says", [
    (["--interval", "0"], "--interval '0': must be more than zero"),
    (["--interval", "-5"], "--interval '-5': not a duration"),
    (["--duration", "soon"], "--duration 'soon': not a duration"),
    (["--listen", "127.0.0.1:99999"], "port 99999 is not between 1 and 65535"),
    (["--textfile", "/tmp/metrics.txt"], "reads only files ending in .prom"),
])
def test_bad_input_is_one_line(tmp_path, args, says):
    res = tlbprobe("watch", "--out", str(tmp_path / "w"), *args)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_unwritable_out_and_port_in_use_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    res = tlbprobe("watch", "--duration", "2", "--out", str(tmp_path / "file" / "w"))
    assert res.returncode == 2 and "--out" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = tlbprobe("watch", "--duration", "2", "--out", str(tmp_path / "w"), "--listen", f"127.0.0.1:{port}")
    assert res.returncode == 2 and "in use" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "w").exists() and not WATCH_JOURNAL.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_query(port: int, query: str) -> List[Dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.loads(r.read())
    assert data["status"] == "success", data
    return data["data"]["result"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus package is not installed "
                    "(install.sh --with-qemu installs it)")
def test_prometheus_scrapes_the_watch_and_reads_the_counter_back(tmp_path):
    """A real Prometheus on the loopback address scrapes --listen every second; its HTTP
    API gives back the MADV_COLLAPSE count the watch recorded. The textfile written beside
    it holds the same value."""
    watch_port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: tlbprobe\n    static_configs:\n      - targets: ['127.0.0.1:{watch_port}']\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out, prom_file = tmp_path / "w", tmp_path / "tlbprobe.prom"
    try:
        with watching(out, "--interval", "1", "--listen", f"127.0.0.1:{watch_port}", "--textfile", str(prom_file)):
            subprocess.run([PY, str(HELPER), "16", "--name", "tlbp-prom"], check=True, capture_output=True,
                           timeout=60)
            time.sleep(1.5)  # the interval with the collapses ends and is recorded
            recorded = sum(r["by_origin"]["madv_collapse"] for r in records(out))
            assert recorded == 8
            query = 'tlbprobe_sync_broadcasts_total{origin="madv_collapse"}'
            deadline, got = time.monotonic() + 40, None
            while time.monotonic() < deadline:
                try:
                    res = prometheus_query(prom_port, query)
                except OSError:
                    res = []  # Prometheus still starting
                if res and float(res[0]["value"][1]) == recorded:
                    got = res
                    break
                time.sleep(1)
            assert got, f"Prometheus never reported {recorded}: last answer {res}"
            assert got[0]["metric"]["job"] == "tlbprobe"
            by_comm = prometheus_query(prom_port, 'tlbprobe_madv_collapse_broadcasts_total{comm="tlbp-prom"}')
            assert by_comm and float(by_comm[0]["value"][1]) == 8
            own = prometheus_query(prom_port, "tlbprobe_watch_own_ipis_total")
            assert own and float(own[0]["value"][1]) >= 1
            from prometheus_client.parser import text_string_to_metric_families

            fams = {f.name: f for f in text_string_to_metric_families(prom_file.read_text())}
            values = {s.labels.get("origin"): s.value for s in fams["tlbprobe_sync_broadcasts"].samples
                      if s.name.endswith("_total")}
            assert values["madv_collapse"] == recorded
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()


def test_workloads_start_and_stop_under_one_watch_then_kill_and_restore(tmp_path):
    """One watch while three jobs start and stop one after another (a MADV_COLLAPSE, a
    hugetlb-unshare collect, a second MADV_COLLAPSE): each origin's count equals the job's
    own count (the helpers' collapses, collect's traced sync calls); then SIGKILL, and
    `tlbprobe restore` leaves the system as it was."""
    before = system_state()
    out = tmp_path / "w"
    with watching(out, "--interval", "1") as proc:
        time.sleep(1.5)
        first = json.loads(subprocess.run([PY, str(HELPER), "32", "--name", "tlbp-first"], capture_output=True,
                                          text=True, timeout=60, check=True).stdout)
        coll = tlbprobe("collect", "--workload", "hugetlb-unshare", "--size", "1G", "--operation", "munmap",
                        "--cycles", "5", "--repeat", "1", "--idle-seconds", "0", "--out", str(tmp_path / "h"), "-q")
        assert coll.returncode == 0, coll.stderr
        second = json.loads(subprocess.run([PY, str(HELPER), "16", "--name", "tlbp-second"], capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        time.sleep(2.5)  # the last job's interval is recorded
        proc.kill()
        proc.wait()
    assert summary(out)["complete"] is False
    res = tlbprobe("restore")
    assert res.returncode == 0, res.stderr
    assert system_state() == before
    recs = records(out)
    check_sums(recs)
    n_other = len(recs[0]["online"]) - 1

    def by(origin, comm=None):
        return sum(p["count"] for r in recs for p in r["processes"]
                   if p["origin"] == origin and (comm is None or p["comm"] == comm))
    assert by("madv_collapse", "tlbp-first") == first["huge_pmds"] == 16
    assert by("madv_collapse", "tlbp-second") == second["huge_pmds"] == 8
    run = json.loads((tmp_path / "h" / "summary.json").read_text())
    unshares = sum(r["by_origin"]["hugetlb_pmd_unshare"] for r in recs)
    assert unshares * n_other == run["queued"]["tlb_remove_table_smp_sync"] and unshares >= 5
    assert sum(r["hugetlb_by_how"].get("munmap", 0) for r in recs) >= 5
    assert sum(r["by_origin"]["unattributed"] for r in recs) == 0


def test_a_cpu_going_offline_and_back_is_noted_and_counted_again(tmp_path):
    """The watch's hotplug path on the real counters and trigger, without offlining a CPU
    of this shared machine: the online list it reads is a stand-in file that says CPU 1
    went away, then came back. The watch closes and reopens CPU 1's counters, refilters,
    notes both changes, and counts a collapse after the return exactly."""
    from dataclasses import replace

    from tlbprobe.measure.paths import REAL
    from tlbprobe.watch.config import WatchConfig
    from tlbprobe.watch.watcher import Watcher

    real_online = (REAL.cpu_dir / "online").read_text()
    if real_online.strip() != "0-1":
        pytest.skip(f"written for this 2-CPU host (online {real_online.strip()})")
    cpu_dir = tmp_path / "cpu"
    cpu_dir.mkdir()
    (cpu_dir / "online").write_text("0-1\n")
    out = tmp_path / "w"
    lines: List[str] = []
    watcher = Watcher(WatchConfig(out=out, interval_s=1.0, duration_s=9.0), log=lines.append,
                      paths=replace(REAL, cpu_dir=cpu_dir))
    import threading

    result: Dict = {}
    t = threading.Thread(target=lambda: result.setdefault("r", watcher.run()))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not (out / "records.jsonl").exists() or not (out / "records.jsonl").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        (cpu_dir / "online").write_text("0\n")
        time.sleep(2.2)
        (cpu_dir / "online").write_text("0-1\n")
        time.sleep(2.2)
        done = json.loads(subprocess.run([PY, str(HELPER), "16", "--name", "tlbp-hotplug"], capture_output=True,
                                         text=True, timeout=60, check=True).stdout)
    finally:
        t.join(timeout=60)
    r = result["r"]
    assert r.complete, r.reason
    notes = " ".join(n for rec in records(out) for n in rec["notes"])
    assert "online CPUs 0-1 -> 0" in notes and "online CPUs 0 -> 0-1" in notes
    assert [rec["online"] for rec in records(out)].count([0]) >= 1
    got = sum(p["count"] for rec in records(out) for p in rec["processes"] if p["comm"] == "tlbp-hotplug")
    assert got == done["huge_pmds"] == 8


def test_another_tracer_is_noted_and_a_removed_instance_leaves_exact_counts(tmp_path):
    """Another tool's tracefs instance appears: noted, nothing else changes. Then someone
    removes the watch's own instance (as `trace-cmd reset -a` would): noted, and a
    collapse after it is still counted exactly, as unattributed."""
    out = tmp_path / "w"
    other = TRACEFS / "instances" / f"tlbp-test-other-{os.getpid()}"
    with watching(out, "--interval", "1", "--duration", "9") as proc:
        os.mkdir(other)
        try:
            time.sleep(1.5)
            first = json.loads(subprocess.run([PY, str(HELPER), "8", "--name", "tlbp-before"], capture_output=True,
                                              text=True, timeout=60, check=True).stdout)
            time.sleep(1.5)
        finally:
            os.rmdir(other)
        os.rmdir(TRACEFS / "instances" / f"tlbprobe-watch-{proc.pid}")
        time.sleep(1.5)
        second = json.loads(subprocess.run([PY, str(HELPER), "8", "--name", "tlbp-after"], capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    recs = records(out)
    check_sums(recs)
    notes = " ".join(n for r in recs for n in r["notes"])
    assert f"another tracer: tracefs instance {other.name} appeared" in notes
    assert "was removed by someone else" in notes
    assert "broadcast(s) unattributed: the trace instance" in notes
    named = sum(p["count"] for r in recs for p in r["processes"] if p["comm"] == "tlbp-before")
    assert named == first["huge_pmds"] == 4
    assert sum(r["broadcasts"] for r in recs) == sum(r["by_origin"]["madv_collapse"] + r["by_origin"]["khugepaged"]
                                                    + r["by_origin"]["unattributed"] for r in recs)
    assert sum(r["by_origin"]["unattributed"] for r in recs) >= second["huge_pmds"] == 4
    s = summary(out)
    assert s["complete"] and s["restored"]
    assert not WATCH_JOURNAL.exists()
