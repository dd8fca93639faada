"""What a person sees on the terminal, in one stack:

- console.py: log lines (also kept in a run's log.txt) and the transient status line;
- numbers.py: how a number, a percentage, a p-value, a per-CPU distribution or a CPU
  list is written;
- tables.py: how rows are laid out in columns, per-CPU columns on hosts small and big,
  and a shell command wrapped at a width.

The collect summary, `tlbprobe diff`, the report's renderers, the kernel builder and the
QEMU runner all use it, so it imports nothing of tlbprobe (the standard library only)."""

from .console import Console, terminal_status

__all__ = ["Console", "terminal_status"]
