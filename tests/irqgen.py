"""Synthetic /proc/interrupts files in the kernel's own layout, for any CPU count.

Written independently of tlbprobe.measure.procfs (no shared code) so that the parser is tested
against text shaped like the kernel's, not against its own writer. The layout follows
show_interrupts() in kernel/irq/proc.c (header: prec+8 spaces then "CPU%-8d"; rows:
"%*d: " then "%10u " per online CPU), x86 arch_show_interrupts() ("%*s: " label,
"%10u " counts, "  description"; ERR/MIS as "%*s: %10u") and arm64 show_ipi_list()
("%*s%u:%s" for IPIn, "%10u " counts, six spaces, description; "Err" as one count).

Counts are given per label as a dict {cpu: n}, a callable cpu -> n, or an int for a
single-value line; labels not given count 0.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

Counts = Union[Mapping[int, int], Callable[[int], int], int]

X86_LINES = [
    ("NMI", "Non-maskable interrupts"),
    ("LOC", "Local timer interrupts"),
    ("SPU", "Spurious interrupts"),
    ("PMI", "Performance monitoring interrupts"),
    ("IWI", "IRQ work interrupts"),
    ("RTR", "APIC ICR read retries"),
    ("RES", "Rescheduling interrupts"),
    ("CAL", "Function call interrupts"),
    ("TLB", "TLB shootdowns"),
    ("TRM", "Thermal event interrupts"),
    ("THR", "Threshold APIC interrupts"),
    ("MCE", "Machine check exceptions"),
    ("MCP", "Machine check polls"),
    ("HYP", "Hypervisor callback interrupts"),
]
X86_SINGLE = ["ERR", "MIS"]
X86_TAIL = [("PIN", "Posted-interrupt notification event"), ("PIW", "Posted-interrupt wakeup event")]
X86_DEVICES = [
    (1, "IO-APIC   1-edge      i8042"),
    (8, "IO-APIC   8-edge      rtc0"),
    (9, "IO-APIC   9-fasteoi   acpi"),
    (24, "PCI-MSI-0000:00:1f.2   0-edge      ahci[0000:00:1f.2]"),
    (25, "PCI-MSIX-0000:03:00.0   1-edge      nvme0q1"),
]

#: arm64 IPI descriptions as of the 5.x kernels with seven IPIs (IPI0..IPI6).
ARM64_IPIS = [
    "Rescheduling interrupts",
    "Function call interrupts",
    "CPU stop interrupts",
    "CPU stop (for crash dump) interrupts",
    "Timer broadcast interrupts",
    "IRQ work interrupts",
    "CPU wake-up interrupts",
]
ARM64_DEVICES = [
    (11, "GICv3  27 Level     arch_timer"),
    (13, "GICv3  33 Level     uart-pl011"),
    (40, "ITS-MSI 524288 Edge      nvme0q0"),
]


def header(cpus: Sequence[int], prec: int = 3) -> str:
    return " " * (prec + 8) + "".join(f"CPU{c:<8d}" for c in cpus)


def count_row(label: str, values: Sequence[int], description: str, prec: int = 3, sep: str = "  ") -> str:
    """One per-CPU row: right-aligned label, "%10u " per value, then the description."""
    return f"{label:>{prec}}: " + "".join(f"{v:10d} " for v in values) + sep + description


def single_row(label: str, value: int, prec: int = 3) -> str:
    return f"{label:>{prec}}: {value:10d}"


def values_for(counts: Optional[Counts], cpus: Sequence[int]) -> List[int]:
    if counts is None:
        return [0] * len(cpus)
    if callable(counts):
        return [counts(c) for c in cpus]
    if isinstance(counts, int):
        raise TypeError("an int is for single-value lines only")
    return [counts.get(c, 0) for c in cpus]


def x86_interrupts(
    cpus: Sequence[int], counts: Optional[Dict[str, Counts]] = None, prec: int = 3, queues: int = 0
) -> str:
    """A whole x86 /proc/interrupts: device lines, arch lines, ERR/MIS, posted-interrupt lines.

    ``queues`` adds that many MSI-X queue lines (IRQ 100, 101, ...), as a multi-queue NVMe
    or network device has one per CPU on a big server: the realistic size of the file.
    """
    counts = counts or {}
    rows = [header(cpus, prec)]
    devices = X86_DEVICES + [(100 + q, f"PCI-MSIX-0000:03:00.0  {q + 2}-edge      nvme0q{q + 2}") for q in range(queues)]
    for irq, desc in devices:
        rows.append(count_row(str(irq), values_for(counts.get(str(irq)), cpus), desc, prec, sep=" "))
    for label, desc in X86_LINES:
        rows.append(count_row(label, values_for(counts.get(label), cpus), desc, prec))
    for label in X86_SINGLE:
        value = counts.get(label, 0)
        assert isinstance(value, int)
        rows.append(single_row(label, value, prec))
    for label, desc in X86_TAIL:
        rows.append(count_row(label, values_for(counts.get(label), cpus), desc, prec))
    return "\n".join(rows) + "\n"


def arm64_interrupts(cpus: Sequence[int], counts: Optional[Dict[str, Counts]] = None, prec: int = 3) -> str:
    """A whole arm64 /proc/interrupts: GIC/ITS device lines, IPI0..IPI6, Err."""
    counts = counts or {}
    rows = [header(cpus, prec)]
    for irq, desc in ARM64_DEVICES:
        rows.append(count_row(str(irq), values_for(counts.get(str(irq)), cpus), desc, prec, sep="   "))
    for i, desc in enumerate(ARM64_IPIS):
        label = f"{'IPI':>{prec - 1}}{i}:" + (" " if prec >= 4 else "")
        values = values_for(counts.get(f"IPI{i}"), cpus)
        rows.append(label + "".join(f"{v:10d} " for v in values) + "      " + desc)
    err = counts.get("Err", 0)
    assert isinstance(err, int)
    rows.append(single_row("Err", err, prec))
    return "\n".join(rows) + "\n"
