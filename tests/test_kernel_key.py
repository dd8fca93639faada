"""`kernel build --dry-run` of a patched kernel from a source tarball computes the cache
key from the files the series touches, taken from the tarball alone: it does not unpack
the tree (issue 22), and the key is the one the unpacked tree gives (so no cached kernel
changes key). A fake tarball, no kernel is built."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tlbprobe.kernel import build

PATCH = """\
--- a/mm/mmu_gather.c
+++ b/mm/mmu_gather.c
@@ -1,3 +1,3 @@
 int a;
-int b;
+int b2;
 int c;
"""


@pytest.fixture
def tarball(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TLBPROBE_CACHE", str(tmp_path / "cache"))
    top = tmp_path / "t" / "linux-source-9.9"
    (top / "mm").mkdir(parents=True)
    (top / "Makefile").write_text("all:\n")
    (top / "mm" / "mmu_gather.c").write_text("int a;\nint b;\nint c;\n")
    (top / "mm" / "other.c").write_text("x\n" * 1000)
    tar = tmp_path / "linux-source-9.9.tar.xz"
    subprocess.run(["tar", "cJf", str(tar), "-C", str(tmp_path / "t"), "linux-source-9.9"], check=True)
    return tar


def test_patched_key_without_unpacking(tarball, tmp_path, monkeypatch):
    patch = tmp_path / "0001-x.patch"
    patch.write_text(PATCH)
    fragment = tmp_path / "frag.config"
    fragment.write_text("CONFIG_X=y\n")
    spec = build.KernelSpec(source=tarball, fragments=[fragment], patches=[patch])
    real_unpack = build.unpack

    def no_unpack(*a, **k):
        raise AssertionError("the dry run unpacked the tarball")

    monkeypatch.setattr(build, "unpack", no_unpack)
    key = build.plan_build(spec).key
    assert not (tmp_path / "cache" / "src").exists()
    monkeypatch.setattr(build, "unpack", real_unpack)
    build.unpack(tarball, log=lambda s: None)
    assert build.unpacked(tarball) is not None
    assert build.plan_build(spec).key == key  # the same key from the unpacked tree


def test_a_patch_that_does_not_apply_is_named_without_unpacking(tarball, tmp_path):
    patch = tmp_path / "0001-x.patch"
    patch.write_text(PATCH.replace("-int b;", "-int nope;"))
    spec = build.KernelSpec(source=tarball, fragments=[], patches=[patch])
    with pytest.raises(Exception) as e:
        build.plan_build(spec)
    assert "mmu_gather.c" in str(e.value) or "apply" in str(e.value)
