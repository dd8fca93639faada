"""What tlbprobe knows about one guest architecture, as one frozen record.

Everything that differs between x86_64 and arm64 and that kernel/, vm/ and measure/ need
is a field here, so that code there asks the record instead of testing the
architecture's name: how QEMU boots it, which image the kernel build makes and how a
file is recognised as one, how it is cross-built and configured, the system call
numbers tlbprobe issues itself, which /proc/interrupts lines count function-call IPIs
and TLB shootdowns, and which flush modes the machine can have. A record is data with a
few small methods that compute from its own fields; it imports nothing of tlbprobe but
the foundation.

Each field's docstring says where its value comes from; the values themselves cite the
kernel (Debian's linux-source 6.12) or QEMU 7.2 (Debian 12) in the record's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple, Union

from ..errors import InputError


@dataclass(frozen=True)
class IrqLine:
    """One line of /proc/interrupts: its label (the first column) and its description
    (the text after the counts), as the architecture's arch_show_interrupts() prints them.
    tlbprobe matches a line by its description (measure/procfs.py), the label is shown."""

    label: str
    description: str


@dataclass(frozen=True)
class IpiLines:
    """The /proc/interrupts lines the sync-IPI arithmetic reads."""

    #: the line that counts function-call IPIs (smp_call_function*() arriving)
    function_call: IrqLine
    #: the line that counts TLB-shootdown IPIs; None where the flush sends none
    tlb_shootdown: Optional[IrqLine]
    #: whether the function-call line counts the shootdowns too (x86: flush_tlb_func runs
    #: as a function call, so CAL includes TLB and the sync IPIs are CAL minus TLB)
    calls_include_shootdowns: bool
    #: where the lines are printed (file and function)
    source: str

    def lines(self) -> Tuple[IrqLine, ...]:
        return (self.function_call,) + ((self.tlb_shootdown,) if self.tlb_shootdown else ())

    def sync_ipis(self, calls: float, shootdowns: float) -> float:
        """Function-call IPIs that are not TLB shootdowns, from the two lines' counts:
        the function-call count, less the shootdowns where it includes them."""
        return calls - shootdowns if self.calls_include_shootdowns else calls


@dataclass(frozen=True)
class FlushDetection:
    """How the host facts (measure/host.py) find the flush mode of a machine of this
    architecture, and which of its CPU flags a run records."""

    #: the flush modes this architecture's kernels can have (vocab.FLUSH_MODES' words)
    modes: Tuple[str, ...]
    #: the mode every kernel of the architecture has, when there is no choice; None: detect
    fixed: Optional[str] = None
    #: why the fixed mode holds (the kernel code), recorded as the run's evidence
    fixed_evidence: str = ""
    #: (regular expression, who): kernel-log lines that say a paravirtual flush is installed
    pv_log: Tuple[Tuple[str, str], ...] = ()
    #: the /proc/cpuinfo flag of a broadcast-invalidation flush used on bare metal, and
    #: the flush mode it means
    broadcast_flag: Optional[str] = None
    broadcast_mode: Optional[str] = None
    #: the /proc/cpuinfo flag a guest's CPUs carry; None: the architecture has none
    guest_flag: Optional[str] = None
    #: the /proc/cpuinfo flags a run records in run.yaml host.cpu_flags (true or false)
    recorded_flags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Qemu:
    """How QEMU boots a guest of this architecture (tlbprobe/vm/guest.py)."""

    binary: str
    #: the Debian package that has the binary (the message when it is missing)
    package: str
    #: machine options before the CPU's (x86: none, QEMU's default pc machine)
    machine: Tuple[str, ...]
    #: -cpu under TCG
    tcg_cpu: str
    #: -cpu under KVM, before the paravirtual-flush switch
    kvm_cpu: str
    #: --pv-tlb-flush choice -> what it adds to the KVM -cpu ("" for nothing); the
    #: choices the architecture accepts are its keys (none: no paravirtual flush to switch)
    kvm_pv_flush: Mapping[str, str]
    #: the serial console's device name: console=<it> on the kernel command line
    console: str
    #: kernel command-line words the architecture's guests get after the common ones
    append: Tuple[str, ...]
    #: loops_per_jiffy preset under TCG (lpj=), None where it must not be given
    tcg_lpj: Optional[int]
    #: os.uname().machine values of hosts on which KVM runs this guest
    kvm_hosts: Tuple[str, ...]

    def cpu(self, accel: str, pv_tlb_flush: Optional[str]) -> str:
        """-cpu for the accelerator, with KVM's paravirtual flush switched as asked."""
        if accel == "tcg":
            return self.tcg_cpu
        switch = self.kvm_pv_flush.get(pv_tlb_flush or "", "")
        return f"{self.kvm_cpu},{switch}" if switch else self.kvm_cpu


@dataclass(frozen=True)
class KernelImage:
    """The bootable image a kernel build makes, and how a file is recognised as one."""

    #: make target in the kernel tree
    target: str
    #: where make leaves it, relative to the build (O=) directory
    path: str
    #: its file name in the kernel cache (kernels/<key>/<name>)
    name: str
    #: (offset, bytes) that every such image has
    magic: Tuple[Tuple[int, bytes], ...]
    #: what the magic is, for the message when a file lacks it
    header: str
    #: the document that defines the header
    source: str

    def not_an_image(self, head: bytes) -> Optional[str]:
        """Why the first bytes of a file are not such an image, or None."""
        if head[:4] == b"\x7fELF":
            article = "an" if self.name[:1].lower() in "aeiou" else "a"
            return f"an ELF file: a vmlinux, not {article} {self.name}"
        if any(head[off:off + len(m)] != m for off, m in self.magic):
            return f"no {self.header}"
        return None

    @property
    def header_size(self) -> int:
        """How many bytes of a file the magic check reads."""
        return max(off + len(m) for off, m in self.magic)


@dataclass(frozen=True)
class KernelBuild:
    """How tlbprobe/kernel/build.py configures and builds a kernel of this architecture."""

    #: make's ARCH= (the kernel's arch/<dir>)
    srcarch: str
    #: CROSS_COMPILE= when the build host is of another architecture
    cross_compile: str
    #: the Debian package of that cross compiler
    cross_package: str
    #: the defconfig base's make target
    defconfig: str
    #: fragments of the kernel tree merged on the defconfig base (paths in the tree)
    defconfig_fragments: Tuple[str, ...]
    #: what the minimal base (tinyconfig) needs from a fragment of the architecture's own
    #: (kernels/config/), beyond what every architecture needs: option -> why
    minimal_needs: Tuple[Tuple[str, str], ...]
    #: options the guest needs on this architecture, beyond every architecture's: the
    #: architecture's share of kernel/build.py's REQUIRED
    required: Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class Arch:
    """One guest architecture. ``name`` is what --arch takes and what a run records."""

    name: str
    #: os.uname().machine of a running kernel of this architecture (the kernel's UTS_MACHINE)
    machines: Tuple[str, ...]
    #: Debian's name of the architecture (dpkg, mmdebstrap --architectures)
    debian: str
    #: the system calls tlbprobe issues by number (ctypes' libc.syscall()): name -> number
    syscalls: Mapping[str, int]
    #: where the numbers come from
    syscall_table: str
    #: the most CPUs a kernel of the architecture can be built for (NR_CPUS)
    nr_cpus_max: int
    nr_cpus_source: str
    interrupts: IpiLines
    flush: FlushDetection
    qemu: Qemu
    image: KernelImage
    build: KernelBuild
    #: the trace events whose entry/exit pairs time a function-call IPI's handler
    #: (collect --cost); empty where the cost observer cannot read them yet
    cost_events: Tuple[str, ...] = ()
    #: why --cost cannot run, when cost_events is empty
    cost_missing: str = ""
    #: stage -> what is not done yet for this architecture, end to end: "build" (kernel
    #: build), "guest" (qemu collect, repro). A stage named here is refused with its text.
    not_done: Mapping[str, str] = field(default_factory=dict)

    def syscall(self, name: str) -> int:
        """The number of a system call tlbprobe issues itself; KeyError when the record
        lacks it (a caller turns that into its own 'unavailable')."""
        return self.syscalls[name]

    def runs_natively_on(self, machine: str) -> bool:
        """Whether a host of ``machine`` (os.uname().machine) is of this architecture."""
        return machine in self.machines

    def make_args(self, build_machine: str) -> Tuple[str, ...]:
        """ARCH= and CROSS_COMPILE= for make on a build host of ``build_machine``
        (os.uname().machine): none when the host is of this architecture, so a native
        build runs make exactly as before."""
        if self.runs_natively_on(build_machine):
            return ()
        return (f"ARCH={self.build.srcarch}", f"CROSS_COMPILE={self.build.cross_compile}")

    def compiler(self, build_machine: str) -> str:
        """The C compiler a kernel build of this architecture needs on that host."""
        return f"{self.build.cross_compile}gcc" if self.make_args(build_machine) else "gcc"

    def require(self, stages: Union[str, Sequence[str]], what: str) -> None:
        """Refuse ``what`` (e.g. 'kernel build --arch arm64') when a stage it needs
        ("build", "guest") is not done yet for this architecture: one InputError that
        says everything that is missing."""
        wanted = (stages,) if isinstance(stages, str) else tuple(stages)
        missing = [self.not_done[s] for s in wanted if self.not_done.get(s)]
        if missing:
            raise InputError(f"{what}: not done yet for {self.name}: {'; and '.join(missing)}")
