"""Boot a kernel in QEMU and run tlbprobe inside it, with the host's root file system.

Why not virtme-ng: it boots the same way (host root over virtio-9p, read-only), but its
exit status was always 255 here and, without --verbose, the command's output was lost;
we need a reliable exit status, the run directory back and a clear verdict on panics.
So we launch QEMU ourselves, the way vmtest/virtme do it:

* the host's / is the guest's root, read-only over virtio-9p; the guest runs the host's
  python and this very checkout, so there is nothing to install in the guest;
* a second 9p share, writable, is the guest's GUEST_OUT (/run/tlbprobe-out): run
  directories come back there. Only /run gets a tmpfs: the host's /tmp stays visible,
  because the checkout (a CI clone, say) and the generated init may well live there;
* PID 1 is a shell script we generate: it mounts what tlbprobe needs, runs the commands,
  prints ``TLBPROBE-EXIT=<status>`` on the console after each and powers off;
* ``panic=-1`` and ``-no-reboot`` turn a panic into QEMU exiting; the console log says
  which; a timeout kills QEMU. The console log is kept beside the results.

What differs between guest architectures (the QEMU binary, its machine and CPU options,
the console, the image's header) is the GuestSpec's ``arch`` record (tlbprobe/arch/); an
x86_64 guest's command line is what it always was.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .. import arch as arches
from ..arch import Arch
from ..datafiles import CHECKOUT
from ..errors import InputError, TlbprobeError
from ..kernel.build import WRAP_FLUSH_PARAM

OUT_TAG = "tlbprobe_out"
GUEST_OUT = "/run/tlbprobe-out"
EXIT_MARK = "TLBPROBE-EXIT="
#: Each command's exit status, written by the guest's init into the writable share: the
#: status a run is judged by, which no line a program prints on the console can fake
#: (the console's EXIT_MARK lines are for people reading the log).
STATUS_FILE = ".status-"
START_MARK = "TLBPROBE-INIT-START"
#: Only a real panic ends a guest: with oops=panic on the command line a BUG or an oops
#: becomes one, while a "watchdog: BUG: soft lockup" (likely under TCG on a busy host) does not.
PANIC_PATTERNS = [re.compile(r"Kernel panic - not syncing[^\n]*")]
#: Under KVM a kernel prints "Linux version" within seconds; a nested KVM that cannot run
#: it hangs in the firmware instead (seen here: "Booting from ROM", then nothing).
KVM_STALL_S = 90
KVM_STALL_MARK = "tlbprobe: KVM guest stalled before the kernel started"
KVM_FAILURE = re.compile(r"(tlbprobe: KVM guest stalled before the kernel started|failed to set MSR|kvm run failed|KVM internal error|emulation failure|"
                         r"Could not access KVM kernel module|failed to initialize kvm|KVM: entry failed)", re.I)


class GuestError(TlbprobeError):
    exit_code = 6


@dataclass
class GuestSpec:
    """How to boot the guest."""

    kernel: Path
    smp: int = 4
    memory: str = "4G"
    accel: str = "auto"                 # auto | kvm | tcg
    #: on | off: KVM's paravirtual flush; wrapper: tlbprobe's test-only one (the kernel
    #: needs kernels/test-only/'s patch; under KVM, KVM's own is switched off so that the
    #: wrapper stays); None: the accelerator's default (KVM: on, TCG: native)
    pv_tlb_flush: Optional[str] = None
    timeout: float = 1200.0
    extra_append: str = ""
    #: TCG only: "single" (all vCPUs take turns in one host thread) or "multi" (one host
    #: thread per vCPU, QEMU's default on x86 hosts); None: QEMU's default. Single is ours:
    #: under multi-threaded TCG a vCPU can run a stale INT3 after the kernel finished
    #: patching its text, and the guest panics at boot (kernels/README.md, "Boot panics").
    tcg_thread: Optional[str] = "single"
    #: the guest's architecture, a name of tlbprobe/arch/ (its record says how to boot it)
    arch: str = arches.DEFAULT

    @property
    def record(self) -> Arch:
        return arches.get(self.arch)


@dataclass
class GuestResult:
    statuses: List[int]                 # one exit status per command, in order
    console: Path
    accel: str
    qemu_cmdline: List[str]
    seconds: float
    panic: Optional[str] = None
    timed_out: bool = False
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.panic and not self.timed_out


def qemu_binary(arch: Optional[Arch] = None) -> str:
    """The QEMU of the guest's architecture (x86_64's unless given), or InputError naming
    its Debian package."""
    q = (arch or arches.get(arches.DEFAULT)).qemu
    path = shutil.which(q.binary)
    if not path:
        raise InputError(f"{q.binary} not found: apt-get install --no-install-recommends {q.package}")
    return path


def kvm_available() -> Optional[str]:
    """None when /dev/kvm can be opened read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return None
    except OSError as e:
        return f"/dev/kvm: {e.strerror}"


def kvm_runs(arch: Arch, machine: Optional[str] = None) -> Optional[str]:
    """None when KVM on this host (``machine``: os.uname().machine unless given) can run a
    guest of ``arch``, else why not: KVM runs guests of the host's own architecture only."""
    machine = machine or os.uname().machine
    if machine in arch.qemu.kvm_hosts:
        return None
    return f"KVM on this {machine} host cannot run an {arch.name} guest"


def cpu_model(accel: str, pv_tlb_flush: Optional[str], arch: Optional[Arch] = None) -> str:
    """-cpu of the guest's architecture (x86_64's unless given): x86 TCG 'max', KVM 'host'
    with KVM's PV TLB flush switched as asked (off for tlbprobe's wrapper, which
    kvm_guest_init() would replace); arm64 TCG 'max,pauth-impdef=on'."""
    return (arch or arches.get(arches.DEFAULT)).qemu.cpu(accel, pv_tlb_flush)


def init_script(commands: List[List[str]], cwd: Path = CHECKOUT) -> str:
    """PID 1 of the guest: mount, run each command, report each status, power off."""
    runs = []
    for i, cmd in enumerate(commands):
        runs.append(f"({shlex.join(cmd)}) </dev/null\nrc=$?\necho $rc > {GUEST_OUT}/{STATUS_FILE}{i}\n"
                    f"echo \"{EXIT_MARK}{i}:$rc\"")
    return f"""#!/bin/sh
# Generated by tlbprobe (tlbprobe/vm/guest.py): PID 1 of a measurement guest.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mkdir -p /run/tmp {GUEST_OUT}
export TMPDIR=/run/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {OUT_TAG} {GUEST_OUT} || echo "cannot mount the output share"
echo {START_MARK}
cd {shlex.quote(str(cwd))}
{chr(10).join(runs)}
sync
echo o > /proc/sysrq-trigger
# PID 1 must not exit while the power-off runs (that would be a panic), and the root
# file system may already be gone: spin in the shell itself.
while :; do :; done
"""


def accel_option(accel: str, tcg_thread: Optional[str]) -> str:
    return f"tcg,thread={tcg_thread}" if accel == "tcg" and tcg_thread else accel


def qemu_command(spec: GuestSpec, accel: str, init: Path, outdir: Path) -> List[str]:
    """The QEMU command line (public so tests and run records can show it)."""
    arch = spec.record
    q = arch.qemu
    # lpj= under TCG: without constant_tsc every x86 vCPU calibrates its delay loop at boot
    # (calibrate_delay_direct()), 80 s of a 64-vCPU boot; x86 delays by the TSC anyway,
    # so the preset only skips the calibration (kernels/README.md). arm64 takes lpj from
    # its timer and delays by it: its record has no preset (tlbprobe/arch/arm64.py).
    lpj = f"lpj={q.tcg_lpj} " if accel == "tcg" and q.tcg_lpj else ""
    wrap = f"{WRAP_FLUSH_PARAM} " if spec.pv_tlb_flush == "wrapper" else ""
    words = "".join(f"{w} " for w in q.append)
    append = (f"root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144 ro "
              f"init={init} console={q.console} panic=-1 oops=panic loglevel=6 {words}{lpj}{wrap}"
              f"transparent_hugepage=madvise {spec.extra_append}").strip()
    return [
        qemu_binary(arch), *q.machine, "-accel", accel_option(accel, spec.tcg_thread),
        "-cpu", cpu_model(accel, spec.pv_tlb_flush, arch),
        "-smp", str(spec.smp), "-m", spec.memory,
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-display", "none",
        "-kernel", str(spec.kernel), "-append", append,
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=/dev/root",
        "-fsdev", f"local,id=out,path={outdir},security_model=none",
        "-device", f"virtio-9p-pci,fsdev=out,mount_tag={OUT_TAG}",
    ]


def find_panic(console: str) -> Optional[str]:
    for pattern in PANIC_PATTERNS:
        m = pattern.search(console)
        if m:
            return m.group(0).strip()
    return None


def read_statuses(outdir: Path) -> List[int]:
    """The commands' exit statuses from the share, in order, up to the first missing one."""
    out: List[int] = []
    while True:
        try:
            out.append(int((outdir / f"{STATUS_FILE}{len(out)}").read_text().strip()))
        except (OSError, ValueError):
            return out


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def boot_once(spec: GuestSpec, accel: str, commands: List[List[str]], outdir: Path,
          status: Callable[[str], None]) -> GuestResult:
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in outdir.glob("run-*"):  # a previous attempt's partial results
        shutil.rmtree(stale, ignore_errors=True)
    for stale in outdir.glob(f"{STATUS_FILE}*"):
        stale.unlink()
    init = outdir / "init.sh"
    init.write_text(init_script(commands))
    init.chmod(0o755)
    console_path = outdir / "console.log"
    cmd = qemu_command(spec, accel, init, outdir)
    (outdir / "qemu-cmdline.txt").write_text(shlex.join(cmd) + "\n")
    start = time.monotonic()
    timed_out = stalled = False
    seen_kernel = False
    with open(console_path, "wb") as console:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        assert proc.stdout
        os.set_blocking(proc.stdout.fileno(), False)
        last = b""
        try:
            while True:
                chunk = proc.stdout.read(65536)
                if chunk:
                    console.write(chunk)
                    console.flush()
                    last = (last + chunk)[-300:]
                    seen_kernel = seen_kernel or b"Linux version" in last
                    line = last.decode("utf-8", "replace").rstrip().splitlines()[-1:] or [""]
                    status(f"guest {time.monotonic() - start:5.0f} s: {line[0][-100:]}")
                elif chunk == b"":
                    break  # EOF: QEMU exited and everything it printed has been read
                else:
                    time.sleep(0.1)  # None: nothing to read yet
                elapsed = time.monotonic() - start
                if accel == "kvm" and not seen_kernel and elapsed > KVM_STALL_S:
                    stalled = True  # a broken nested KVM can also hang before the kernel prints
                if elapsed > spec.timeout or stalled:
                    timed_out = not stalled
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        proc.wait()
    status("")
    text = console_path.read_text(errors="replace")
    if stalled:
        with open(console_path, "a") as f:
            f.write(f"\n{KVM_STALL_MARK}: no kernel output after {KVM_STALL_S} s\n")
        text = console_path.read_text(errors="replace")
    return GuestResult(read_statuses(outdir), console_path, accel, cmd, time.monotonic() - start,
                       panic=find_panic(text), timed_out=timed_out)


def not_an_image(path: Path, arch: Optional[Arch] = None) -> Optional[str]:
    """Why a file is not a kernel image QEMU's -kernel boots for the architecture (x86_64
    unless given), or None: the header its record names (x86's boot protocol,
    Documentation/arch/x86/boot.rst: "HdrS" at 0x202 and 0xAA55 at 0x1FE; arm64's Image,
    Documentation/arch/arm64/booting.rst: "ARM\\x64" at 0x38). A vmlinux (ELF) or a
    compressed blob has none."""
    image = (arch or arches.get(arches.DEFAULT)).image
    try:
        with open(path, "rb") as f:
            head = f.read(image.header_size)
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    return image.not_an_image(head)


def check_spec(spec: GuestSpec) -> None:
    """Refuse what QEMU would refuse (or hang on) before anything is created or booted.
    An architecture whose guests are not done yet (its record's not_done) first."""
    arch = arches.get(spec.arch)
    arch.require("guest", f"an {arch.name} guest (--arch {arch.name})")
    if not spec.kernel.is_file():
        raise InputError(f"{spec.kernel}: no such kernel image (build one with `tlbprobe kernel build`)")
    why = not_an_image(spec.kernel, arch)
    if why:
        raise InputError(f"{spec.kernel}: not a bootable {arch.build.srcarch} kernel image ({why}); give the "
                         f"{arch.image.name}, e.g. {arch.image.path} or what `tlbprobe kernel build` prints")
    if spec.accel not in ("auto", "kvm", "tcg"):
        raise InputError(f"--accel {spec.accel}: choose auto, kvm or tcg")
    if not 1 <= spec.smp <= 256:
        raise InputError(f"--smp {spec.smp} is out of range (1..256)")
    if not re.fullmatch(r"[1-9]\d*[MG]?", spec.memory):
        raise InputError(f"--memory {spec.memory!r}: give a size like 4G or 2048M")
    if spec.timeout <= 0:
        raise InputError(f"--timeout {spec.timeout:g}: must be positive (seconds)")
    choices = tuple(arch.qemu.kvm_pv_flush)
    if spec.pv_tlb_flush is not None and not choices:
        raise InputError(f"--pv-tlb-flush {spec.pv_tlb_flush}: {arch.name} guests have no paravirtual TLB flush "
                         f"to switch; leave it out")
    if spec.pv_tlb_flush not in (None, *choices):
        raise InputError(f"--pv-tlb-flush {spec.pv_tlb_flush}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    if spec.accel == "kvm" and kvm_runs(arch):
        raise InputError(f"--accel kvm: {kvm_runs(arch)}; use --accel tcg (or auto)")
    if spec.accel == "tcg" and spec.pv_tlb_flush == "on":
        raise InputError("--pv-tlb-flush on needs KVM (a TCG guest has no paravirtual TLB flush; "
                         "--pv-tlb-flush wrapper gives it tlbprobe's test-only one)")
    if spec.tcg_thread not in (None, "single", "multi"):
        raise InputError(f"--tcg-thread {spec.tcg_thread}: choose single or multi")


#: Boot panics that a second boot would repeat (no init to run): not retried.
DETERMINISTIC_PANIC = re.compile(r"Requested init .* failed|No working init found|Unable to mount root fs")


def retry_boot_panic(panic: Optional[str], console: str) -> bool:
    """Whether a panic deserves a second boot: one before our init started (a rare early
    crash under TCG was seen), unless it is one a second boot would repeat."""
    return bool(panic) and START_MARK not in console and not DETERMINISTIC_PANIC.search(panic or "")


def run_guest(spec: GuestSpec, commands: List[List[str]], outdir: Path,
              log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None) -> GuestResult:
    """Boot, run the commands, return their statuses. Raises GuestError on panic or timeout.

    ``auto`` tries KVM and falls back to TCG when KVM is missing or the guest dies the way
    a broken nested KVM makes it die. A panic before our init started (a rare early boot
    crash under TCG was seen) is retried once, and the retry is said.
    """
    check_spec(spec)
    outdir = Path(outdir).resolve()  # the guest sees the host's / : init= must be absolute
    accel = spec.accel
    notes: List[str] = []
    if accel == "auto":
        why = kvm_runs(spec.record) or kvm_available()
        accel = "tcg" if why else "kvm"
        if why:
            notes.append(f"KVM not usable ({why}); using TCG")
            log(f"notice: {notes[-1]}")
    if accel == "tcg" and spec.pv_tlb_flush == "on":
        raise InputError("--pv-tlb-flush on needs KVM, which is not usable here")
    attempt = 0
    while True:
        attempt += 1
        result = boot_once(spec, accel, commands, outdir, status)
        text = result.console.read_text(errors="replace")
        failed = not result.ok or len(result.statuses) < len(commands)
        if accel == "kvm" and spec.accel == "auto" and failed and KVM_FAILURE.search(text):
            notes.append(f"KVM failed ({KVM_FAILURE.search(text).group(0)}); falling back to TCG")
            log(f"notice: {notes[-1]}")
            accel = "tcg"
            continue
        if attempt == 1 and retry_boot_panic(result.panic, text):
            notes.append(f"the guest panicked during boot ({result.panic}); retried once")
            log(f"notice: {notes[-1]}")
            (outdir / "console.log").rename(outdir / "console-first-boot.log")
            continue
        break
    result.notes = notes
    if result.timed_out:
        raise GuestError(f"the guest did not finish within {spec.timeout:.0f} s; console log "
                         f"{result.console}, its end:\n{tail(text)}")
    if result.panic:
        raise GuestError(f"the guest kernel panicked: {result.panic}; console log {result.console}, "
                         f"its end:\n{tail(text)}")
    if len(result.statuses) < len(commands):
        raise GuestError(f"the guest stopped after {len(result.statuses)} of {len(commands)} command(s); "
                         f"console log {result.console}, its end:\n{tail(text)}")
    return result


def guest_python() -> str:
    """The interpreter the guest runs: this one (the host's root is the guest's)."""
    return sys.executable
