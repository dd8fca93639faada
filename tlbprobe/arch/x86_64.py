"""x86_64: every guest tlbprobe has booted, and the architecture the series' step 1 is for.

Sources (Debian's linux-source 6.12 unless said otherwise):

* system calls: arch/x86/entry/syscalls/syscall_64.tbl, ``298 common perf_event_open``;
* /proc/interrupts: arch/x86/kernel/irq.c arch_show_interrupts() prints ``CAL`` (each
  CPU's irq_call_count, "Function call interrupts") and ``TLB`` (irq_tlb_count, "TLB
  shootdowns"). A shootdown arrives as a function-call IPI (sysvec_call_function*() in
  arch/x86/kernel/smp.c counts irq_call_count) whose handler flush_tlb_func() counts
  irq_tlb_count too (arch/x86/mm/tlb.c), so CAL includes TLB;
* flush modes: native IPIs (native_flush_tlb_multi(), arch/x86/mm/tlb.c), paravirtual
  (KVM's kvm_flush_tlb_multi() in arch/x86/kernel/kvm.c prints "KVM setup pv remote TLB
  flush"; Hyper-V "Using hypercall for remote TLB flush"), INVLPGB (6.15+); tlbprobe's
  test-only wrapper (kernels/test-only/) prints its own line;
* the image: Documentation/arch/x86/boot.rst, the setup header's "HdrS" at 0x202 and the
  boot sector's 0xAA55 at 0x1FE; ``make bzImage`` leaves it in arch/x86/boot/bzImage;
* NR_CPUS: arch/x86/Kconfig NR_CPUS_RANGE_END "default 8192 if SMP && CPUMASK_OFFSTACK";
* UTS_MACHINE := x86_64 (arch/x86/Makefile): what os.uname().machine says.

QEMU (7.2, Debian 12): the default machine (pc), ``-cpu max`` under TCG, ``host`` under
KVM with ``kvm-pv-tlb-flush`` switched as --pv-tlb-flush asks. Under TCG the guest
calibrates its delay loop on every vCPU unless lpj= is preset (tlbprobe/vm/guest.py).
"""

from types import MappingProxyType

from .record import Arch, FlushDetection, IpiLines, IrqLine, KernelBuild, KernelImage, Qemu

#: loops_per_jiffy preset for TCG guests (a 4.2 GHz host's BogoMIPS at HZ=1000); x86
#: delays by the TSC once booted, so the preset only skips the calibration
TCG_LPJ = 2100000

ARCH = Arch(
    name="x86_64",
    machines=("x86_64",),
    debian="amd64",
    syscalls=MappingProxyType({"perf_event_open": 298}),
    syscall_table="arch/x86/entry/syscalls/syscall_64.tbl",
    nr_cpus_max=8192,
    nr_cpus_source="MAXSMP, arch/x86/Kconfig NR_CPUS_RANGE_END",
    interrupts=IpiLines(
        function_call=IrqLine("CAL", "Function call interrupts"),
        tlb_shootdown=IrqLine("TLB", "TLB shootdowns"),
        calls_include_shootdowns=True,
        source="arch/x86/kernel/irq.c arch_show_interrupts()",
    ),
    flush=FlushDetection(
        modes=("native", "pv", "invlpgb", "unknown"),
        pv_log=(
            (r"KVM setup pv remote TLB flush", "kvm"),
            (r"(?i:Using hypercall for remote TLB flush)", "hyperv"),
            # kernels/test-only/: a wrapper of the native flush installed as the
            # paravirtual one, so a guest without a hypervisor's flush takes the same
            # branches (repro --pv-tlb-flush wrapper); every flush still goes out as IPIs
            (r"tlbprobe: test-only paravirtual TLB flush[^\n]*", "tlbprobe's test-only wrapper"),
        ),
        broadcast_flag="invlpgb",
        broadcast_mode="invlpgb",
        guest_flag="hypervisor",
        recorded_flags=("invlpgb", "pcid", "invpcid", "hypervisor", "pdpe1gb"),
    ),
    qemu=Qemu(
        binary="qemu-system-x86_64",
        package="qemu-system-x86",
        machine=(),
        tcg_cpu="max",
        kvm_cpu="host",
        # "wrapper": kvm_guest_init() would replace tlbprobe's wrapper with KVM's own flush
        kvm_pv_flush=MappingProxyType({"on": "+kvm-pv-tlb-flush", "off": "-kvm-pv-tlb-flush",
                                       "wrapper": "-kvm-pv-tlb-flush"}),
        console="ttyS0",
        append=("tsc=reliable",),
        tcg_lpj=TCG_LPJ,
        kvm_hosts=("x86_64",),
    ),
    image=KernelImage(
        target="bzImage",
        path="arch/x86/boot/bzImage",
        name="bzImage",
        magic=((0x1FE, b"\x55\xaa"), (0x202, b"HdrS")),
        header="x86 boot protocol header (HdrS at 0x202)",
        source="Documentation/arch/x86/boot.rst",
    ),
    build=KernelBuild(
        srcarch="x86",
        cross_compile="x86_64-linux-gnu-",
        cross_package="gcc-x86-64-linux-gnu",
        defconfig="x86_64_defconfig",
        defconfig_fragments=("kernel/configs/kvm_guest.config",),
        # kernels/config/tlbprobe-minimal.config is x86's today: PARAVIRT, ACPI, the TSC,
        # the HPET and PTI are in it
        minimal_needs=(),
        required=(
            ("CONFIG_PARAVIRT", "selects MMU_GATHER_RCU_TABLE_FREE"),
            ("CONFIG_KVM_GUEST", "KVM's paravirtual TLB flush (--pv-tlb-flush)"),
            ("CONFIG_SERIAL_8250_CONSOLE", "console=ttyS0"),
            ("CONFIG_ACPI", "QEMU's power-off"),
            ("CONFIG_UNWINDER_ORC|CONFIG_UNWINDER_FRAME_POINTER", "kernel stacks that name a caller"),
        ),
    ),
    cost_events=("irq_vectors/call_function_entry", "irq_vectors/call_function_exit",
                 "irq_vectors/call_function_single_entry", "irq_vectors/call_function_single_exit"),
)
