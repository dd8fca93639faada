"""arm64: the architecture where the series' step 1 must leave every broadcast alone.

arm64 flushes remote TLBs with broadcast TLBI instructions (``tlbi ...is`` then
``dsb(ish)``: flush_tlb_mm() and __flush_tlb_range() in arch/arm64/include/asm/tlbflush.h),
which interrupt no CPU. So the flush waits for no GUP-fast walker, and
tlb_remove_table_sync_one() (mm/mmu_gather.c; arm64 always selects
MMU_GATHER_RCU_TABLE_FREE, arch/arm64/Kconfig) is the only thing that does: the series'
hook is not defined in arch/arm64/include/asm/tlb.h, so its generic answer (false) keeps
the sync, and a patched kernel sends what a baseline sends.

Sources (Debian's linux-source 6.12 unless said otherwise):

* system calls: arm64 uses the generic table, include/uapi/asm-generic/unistd.h
  ``#define __NR_perf_event_open 241``;
* /proc/interrupts: arch/arm64/kernel/smp.c arch_show_interrupts() prints one line per
  IPI type, ``IPI0:`` .. ``IPI7:`` (MAX_IPI is 8: six traceable types and the backtrace
  and KGDB ones), each CPU's count, then the type's name from ipi_types[];
  IPI_CALL_FUNC is IPI1, "Function call interrupts" (both smp_call_function*() paths:
  arch_send_call_function_ipi_mask() and arch_send_call_function_single_ipi()). There
  is no TLB-shootdown line, since no flush sends an IPI, so nothing is subtracted;
* the image: Documentation/arch/arm64/booting.rst and arch/arm64/include/asm/image.h:
  the 64-byte header's ``magic`` (le32 at 0x38) is "ARM\\x64"; ``make Image`` leaves it
  in arch/arm64/boot/Image;
* NR_CPUS: arch/arm64/Kconfig "range 2 4096";
* UTS_MACHINE := aarch64 (arch/arm64/Makefile): what os.uname().machine says;
* /proc/cpuinfo: arm64 lists "Features" (hwcaps), not x86's "flags", and has no flag
  that tells a guest; nothing there changes the flush mode, which is always the broadcast;
* delays: arm64 sets lpj_fine from the architected timer (arch/arm64/kernel/time.c) and
  __delay() counts timer cycles derived from loops_per_jiffy (arch/arm64/lib/delay.c),
  so an lpj= preset (x86's TCG shortcut) would make every udelay() wrong: none is given.

QEMU (7.2, Debian 12's qemu-system-arm, which has qemu-system-aarch64): ``-M virt``
offers ``gic-version=2, 3, 4, host, max`` (``-M virt,help``); GICv2 serves at most 8
CPUs, so ``gic-version=3``. ``-cpu max`` with ``pauth-impdef=on`` (``-device
max-arm-cpu,help``: ``pauth-impdef=<bool> (default: false)``): QEMU's default pointer
authentication algorithm, the architected QARMA, is reported to dominate TCG time (issue
25: about 80% of a run; a defconfig boot 10.4 s, 7.1 s with the option; not measured
here), and the implementation-defined one is cheap to emulate. virt's UART is a PL011: console ttyAMA0. Its PCIe host bridge carries
the virtio-9p-pci shares as on x86. Power-off is PSCI SYSTEM_OFF (ARM64 selects
ARM_PSCI_FW), which the guest's sysrq-o reaches.
"""

from types import MappingProxyType

from .record import Arch, FlushDetection, IpiLines, IrqLine, KernelBuild, KernelImage, Qemu

ARCH = Arch(
    name="arm64",
    machines=("aarch64",),
    debian="arm64",
    syscalls=MappingProxyType({"perf_event_open": 241}),
    syscall_table="include/uapi/asm-generic/unistd.h",
    nr_cpus_max=4096,
    nr_cpus_source="arch/arm64/Kconfig NR_CPUS range 2 4096",
    interrupts=IpiLines(
        function_call=IrqLine("IPI1", "Function call interrupts"),
        tlb_shootdown=None,
        calls_include_shootdowns=False,
        source="arch/arm64/kernel/smp.c arch_show_interrupts(), ipi_types[IPI_CALL_FUNC]",
    ),
    flush=FlushDetection(
        modes=("tlbi-broadcast",),
        fixed="tlbi-broadcast",
        fixed_evidence=("arm64 flushes with broadcast TLBI instructions, no IPI (arch/arm64/include/asm/"
                        "tlbflush.h): the sync is never implied"),
    ),
    qemu=Qemu(
        binary="qemu-system-aarch64",
        package="qemu-system-arm",
        machine=("-M", "virt,gic-version=3"),
        tcg_cpu="max,pauth-impdef=on",
        kvm_cpu="host",
        kvm_pv_flush=MappingProxyType({}),
        console="ttyAMA0",
        append=(),
        tcg_lpj=None,
        kvm_hosts=("aarch64",),
    ),
    image=KernelImage(
        target="Image",
        path="arch/arm64/boot/Image",
        name="Image",
        magic=((0x38, b"ARM\x64"),),
        header="arm64 Image header (magic ARM\\x64 at 0x38)",
        source="Documentation/arch/arm64/booting.rst, arch/arm64/include/asm/image.h",
    ),
    build=KernelBuild(
        srcarch="arm64",
        cross_compile="aarch64-linux-gnu-",
        cross_package="gcc-aarch64-linux-gnu",
        defconfig="defconfig",
        # virt.config: the defconfig without the SoC platforms a virt guest lacks
        defconfig_fragments=("kernel/configs/kvm_guest.config", "arch/arm64/configs/virt.config"),
        minimal_needs=(
            ("CONFIG_ARM64_4K_PAGES", "2 MiB PMDs and hugetlb PMD sharing (ARCH_WANT_HUGE_PMD_SHARE if ARM64_4K_PAGES)"),
            ("CONFIG_PCI", "virt's PCIe bus, for virtio-9p-pci"),
            ("CONFIG_PCI_HOST_GENERIC", "virt's PCIe host bridge (drivers/pci/controller/Kconfig, depends on OF)"),
            ("CONFIG_SERIAL_AMBA_PL011", "virt's UART"),
            ("CONFIG_SERIAL_AMBA_PL011_CONSOLE", "console=ttyAMA0"),
            ("CONFIG_HZ_1000", "the tick of the x86 guests (arm64's default is HZ_250, kernel/Kconfig.hz)"),
        ),
        required=(
            ("CONFIG_ARM64_4K_PAGES", "2 MiB PMDs and hugetlb PMD sharing"),
            ("CONFIG_PCI_HOST_GENERIC", "the 9p shares' PCIe host bridge"),
            ("CONFIG_SERIAL_AMBA_PL011_CONSOLE", "console=ttyAMA0"),
            ("CONFIG_ARM_PSCI_FW", "QEMU's power-off (PSCI SYSTEM_OFF)"),
            ("CONFIG_ARM_GIC_V3", "-M virt,gic-version=3"),
            ("CONFIG_FRAME_POINTER", "kernel stacks that name a caller"),
        ),
    ),
    cost_missing=("arm64 has no irq_vectors events: its ipi:ipi_entry/ipi_exit pair (arch/arm64/kernel/smp.c "
                  "do_handle_IPI()) names the IPI by its type, which the cost observer does not read yet"),
    not_done=MappingProxyType({
        "build": ("the cross-build (kernels/config/ has no arm64 fragment for the minimal base, kernel/build.py's "
                  "required options are x86's, and no arm64 kernel has been built; tlbprobe/arch/arm64.py "
                  "lists what each needs)"),
        "guest": ("an arm64 root file system (the guest boots this host's / over 9p, whose x86_64 programs an "
                  "arm64 guest cannot run, and no arm64 guest has been booted)"),
    }),
)
