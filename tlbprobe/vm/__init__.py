"""QEMU guests: boot a kernel with the host's root, run commands, bring the results back."""
