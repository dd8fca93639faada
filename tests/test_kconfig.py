"""Kernel configuration bases and the required-options check (tlbprobe/kernel/build.py),
against a fake kernel tree: its Makefile writes a .config of every required option for
the base targets and records which targets ran; its merge_config.sh applies fragments
the way the real one does (a later line for an option replaces an earlier one). The real
tree's olddefconfig is exercised in tests/test_qemu.py (slow)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tlbprobe.errors import InputError
from tlbprobe.kernel import build as kbuild
from tlbprobe.kernel.build import (CONFIG_BASES, DEBUG_FRAGMENT, DEFAULT_BASE, DEFAULT_FRAGMENT, MINIMAL_FRAGMENT,
                                   REQUIRED, BuildError, KernelSpec, build_kernel, missing_options, plan_build,
                                   required_options)

MERGE = '''#!/usr/bin/env python3
import re, sys
args = sys.argv[1:]
assert args[:2] == ["-m", "-O"], args
out, files = args[2], args[3:]
opts, order = {}, []
for f in files:
    with open(f) as fh:
        for line in fh:
            line = line.strip()
            m = re.match(r"(CONFIG_\\w+)=", line) or re.match(r"# (CONFIG_\\w+) is not set", line)
            if m:
                if m.group(1) not in opts:
                    order.append(m.group(1))
                opts[m.group(1)] = line
with open(out + "/merged-files", "w") as fh:
    fh.write("\\n".join(files[1:]) + "\\n")
with open(out + "/.config", "w") as fh:
    fh.write("\\n".join(opts[o] for o in order) + "\\n")
'''


def full_config() -> str:
    """A .config with every required option (the first name of each 'A|B')."""
    return "".join(f"{o.split('|')[0]}=y\n" for o, _ in REQUIRED) + "CONFIG_NR_CPUS=64\n"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBPROBE_CACHE", str(tmp_path / "cache"))
    t = tmp_path / "linux"
    (t / "mm").mkdir(parents=True)
    (t / "kernel" / "configs").mkdir(parents=True)
    (t / "kernel" / "configs" / "kvm_guest.config").write_text("CONFIG_KVM_GUEST=y\n")
    (t / "scripts" / "kconfig").mkdir(parents=True)
    merge = t / "scripts" / "kconfig" / "merge_config.sh"
    merge.write_text(MERGE)
    merge.chmod(0o755)
    (t / "start.config").write_text(full_config())
    (t / "Makefile").write_text(textwrap.dedent("""\
        tinyconfig x86_64_defconfig:
        \t@echo $@ >> $(O)/targets; cp start.config $(O)/.config
        olddefconfig:
        \t@echo $@ >> $(O)/targets
        bzImage:
        \t@mkdir -p $(O)/arch/x86/boot $(O)/include/config
        \t@printf 'HdrS' > $(O)/arch/x86/boot/bzImage; echo 6.12.0-fake > $(O)/include/config/kernel.release
        \t@echo '  CC      mm/fake.o'
        """))
    return t


def dropping(tmp_path: Path, *options: str) -> Path:
    frag = tmp_path / "drop.config"
    frag.write_text("".join(f"# {o} is not set\n" for o in options))
    return frag


def test_the_default_base_is_one_constant_and_minimal():
    assert DEFAULT_BASE == "minimal" and KernelSpec().base == DEFAULT_BASE
    assert set(CONFIG_BASES) == {"defconfig", "minimal"}
    assert CONFIG_BASES["minimal"].target == "tinyconfig" and CONFIG_BASES["minimal"].fragments == (MINIMAL_FRAGMENT,)
    assert CONFIG_BASES["defconfig"].tree_fragments == ("kernel/configs/kvm_guest.config",)


def test_a_fragment_that_drops_thp_fails_the_build_naming_it(tree, tmp_path):
    spec = KernelSpec(source=tree, fragments=[DEFAULT_FRAGMENT, dropping(tmp_path, "CONFIG_TRANSPARENT_HUGEPAGE")],
                      base="minimal")
    with pytest.raises(BuildError, match=r"lacks CONFIG_TRANSPARENT_HUGEPAGE \(MADV_COLLAPSE, khugepaged\)"):
        build_kernel(spec, log=lambda s: None)
    build = kbuild.cache_root() / "build" / plan_build(spec).tree_key
    assert (build / "targets").read_text().split() == ["tinyconfig", "olddefconfig"]
    # the minimal base's own fragment comes first, then the spec's, in order
    assert (build / "merged-files").read_text().split() == [str(MINIMAL_FRAGMENT), str(DEFAULT_FRAGMENT),
                                                          str(tmp_path / "drop.config")]


def test_each_base_configures_from_its_target_and_is_cached_by_its_own_key(tree):
    built = {}
    for base in ("defconfig", "minimal"):
        k = build_kernel(KernelSpec(source=tree, base=base), log=lambda s: None)
        meta = json.loads((k.bzimage.parent / "meta.json").read_text())
        assert meta["base"] == base and meta["fragments"] == [str(DEFAULT_FRAGMENT)]
        built[base] = (k.key, meta)
    assert built["defconfig"][0] != built["minimal"][0]
    assert built["defconfig"][1]["base_config"] == ["x86_64_defconfig", "kernel/configs/kvm_guest.config"]
    assert built["minimal"][1]["base_config"] == ["tinyconfig", str(MINIMAL_FRAGMENT)]
    assert build_kernel(KernelSpec(source=tree, base="minimal"), log=lambda s: None).cached


def test_the_defconfig_base_keeps_the_keys_kernels_were_cached_by(tree):
    """Recorded runs name their kernels by key: the defconfig base's key is what it was
    before bases existed (KBUILD_FORMAT, the source and the fragments' bytes)."""
    plan = plan_build(KernelSpec(source=tree, base="defconfig"))
    src_id = kbuild.tree_identity(tree)
    assert plan.tree_key == kbuild._sha(str(kbuild.KBUILD_FORMAT).encode(), src_id, DEFAULT_FRAGMENT.read_bytes())


def test_trees_older_than_the_minimal_base_are_built_from_defconfig(tree, tmp_path):
    """Debian 12's 6.1 built from the minimal base did not mount its 9p root: a tree older
    than MINIMAL_SINCE gets the defconfig base (and its old cache key), newer ones minimal."""
    assert kbuild.tree_version(tree) is None  # no version in the fake Makefile: taken as new
    assert plan_build(KernelSpec(source=tree, base="minimal")).spec.base == "minimal"
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\n" + (tree / "Makefile").read_text())
    assert kbuild.tree_version(tree) == (6, 1)
    plan = plan_build(KernelSpec(source=tree, base="minimal"))
    assert plan.spec.base == "defconfig" and plan.key == plan_build(KernelSpec(source=tree, base="defconfig")).key
    k = build_kernel(KernelSpec(source=tree, base="minimal"), log=lambda s: None)
    assert json.loads((k.bzimage.parent / "meta.json").read_text())["base"] == "defconfig"
    for name, want in (("linux-source-6.1.tar.xz", (6, 1)), ("linux-6.12.3.tar.gz", (6, 12)), ("x.tar.xz", None)):
        assert kbuild.tarball_version(tmp_path / name) == want


def test_an_unknown_base_is_refused(tree):
    with pytest.raises(InputError, match="config base 'tiny': choose defconfig or minimal"):
        plan_build(KernelSpec(source=tree, base="tiny"))


def test_the_debug_flavour_requires_what_it_is_for():
    config = full_config()
    assert missing_options(config, required_options([DEFAULT_FRAGMENT])) == []
    missing = missing_options(config, required_options([DEFAULT_FRAGMENT, DEBUG_FRAGMENT]))
    assert [m.split()[0] for m in missing] == ["CONFIG_KASAN", "CONFIG_DEBUG_VM", "CONFIG_PAGE_TABLE_CHECK"]


def test_too_few_possible_cpus_and_a_lost_unwinder_are_named():
    config = full_config().replace("CONFIG_NR_CPUS=64", "CONFIG_NR_CPUS=8").replace("CONFIG_UNWINDER_ORC=y\n", "")
    missing = missing_options(config)
    assert "CONFIG_NR_CPUS >= 64 (it is 8)" in missing
    assert any(m.startswith("CONFIG_UNWINDER_ORC or CONFIG_UNWINDER_FRAME_POINTER") for m in missing)
    assert missing_options(config.replace("CONFIG_NR_CPUS=8", "CONFIG_NR_CPUS=256")
                           + "CONFIG_UNWINDER_FRAME_POINTER=y\n") == []
