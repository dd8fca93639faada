#!/usr/bin/env bash
# Install what tlbprobe needs on Debian 12, as root: the Debian packages it drives
# (cyclictest from rt-tests, dmesg/mount from util-linux) and a virtualenv in .venv with
# tlbprobe and its Python dependencies. With --with-qemu also what the QEMU A/B and the
# test suite need: QEMU, Debian's linux-source and what building a kernel takes.
# Safe to run again; it only adds what is missing. It links /usr/local/bin/tlbprobe to
# the venv's script; --uninstall removes that link and the venv.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run me as root (e.g. sudo ./install.sh): I install Debian packages" >&2
    exit 1
fi

APT_PACKAGES=(python3 python3-venv python3-pip rt-tests util-linux procps)
# linux-source-6.1 (Debian 12's own kernel version) is for the test of the kprobe attribution
# that kernels without csd trace events get; prometheus for the test that scrapes `tlbprobe
# watch` (tests/test_watch_real.py); systemd for systemd-analyze, which checks the unit file
# contrib/tlbprobe-watch.service. qemu-system-arm has qemu-system-aarch64, for arm64 guests
# (tlbprobe/arch/arm64.py; about 9 MB).
QEMU_PACKAGES=(qemu-system-x86 qemu-system-arm linux-source-6.12 linux-source-6.1 build-essential bc flex bison
               libelf-dev libssl-dev cpio dwarves patch xz-utils prometheus systemd)
LINK=/usr/local/bin/tlbprobe
case "${1:-}" in
    --with-qemu) APT_PACKAGES+=("${QEMU_PACKAGES[@]}") ;;
    --uninstall)
        # Only our own link: a tlbprobe installed some other way is left alone.
        if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$PWD/.venv/bin/tlbprobe" ]; then
            rm "$LINK" && echo "install.sh: removed $LINK"
        fi
        rm -rf .venv && echo "install.sh: removed .venv (Debian packages stay installed)"
        exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--with-qemu | --uninstall]" >&2; exit 2 ;;
esac
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3, so the venv does not depend on whatever python3 is first in PATH.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    echo "install.sh: creating .venv"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# On root's PATH (and sudo's secure_path), so that `sudo tlbprobe collect` works as written.
if [ -e "$LINK" ] && [ "$(readlink "$LINK" 2>/dev/null)" != "$PWD/.venv/bin/tlbprobe" ]; then
    echo "install.sh: $LINK exists and is not ours; leaving it (use $PWD/.venv/bin/tlbprobe)" >&2
else
    ln -sfn "$PWD/.venv/bin/tlbprobe" "$LINK"
fi
echo "install.sh: ready: tlbprobe --help   (./install.sh --uninstall removes the link and .venv)"
