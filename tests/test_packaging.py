"""A plain (non-editable) install holds the one top-level package `bsnn_hw` with `bsnn_hw.train`, `bsnn_hw.hdl` and
`bsnn_hw.sim`, every source file of train/, hdl/, sim/ and bsnn_hw/, and no generic top-level names."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {"bsnn_hw": "bsnn_hw", "train": "bsnn_hw/train", "hdl": "bsnn_hw/hdl", "sim": "bsnn_hw/sim"}


def _setuptools_version() -> tuple[int, ...]:
    try:
        from importlib.metadata import version
        return tuple(int(x) for x in version("setuptools").split(".")[:2])
    except Exception:
        return (0,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the sources so that no build/ or egg-info lands in the working tree.
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "sim_build", ".bsnn-cache")
    for d in SOURCE_DIRS:
        shutil.copytree(ROOT / d, src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / f).exists():
            shutil.copy(ROOT / f, src / f)
    dist = tmp_path_factory.mktemp("dist")
    # Without build isolation when this environment has a setuptools that builds wheels itself (>= 70.1: fast, no
    # network); else pip fetches the build requirements from PyPI.
    isolation = []
    if _setuptools_version() >= (70, 1):
        isolation = ["--no-build-isolation"]
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation, "-q",
                        "-w", str(dist)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (whl,) = dist.glob("bsnn_hw-*.whl")
    return whl


def test_wheel_has_only_bsnn_hw(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"bsnn_hw"}
    for pkg in ("bsnn_hw/__init__.py", "bsnn_hw/train/__init__.py", "bsnn_hw/hdl/__init__.py",
                "bsnn_hw/sim/__init__.py"):
        assert pkg in names
    info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(info).decode().split() == ["bsnn_hw"]
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "bsnn-hw = bsnn_hw.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_wheel_has_every_source_file(wheel):
    # A sub-folder missing from [tool.setuptools] packages would silently drop its files from the install.
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for src, dest in SOURCE_DIRS.items():
        for f in (ROOT / src).rglob("*.py"):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(ROOT / src).as_posix()
            if f"{dest}/{rel}" not in names:
                missing.append(f"{src}/{rel}")
    assert not missing, f"not installed by a plain `pip install .`: {missing}"


def test_install_imports_from_the_install(wheel, tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in target.iterdir() if not x.name.endswith(".dist-info") and x.name != "bin") \
        == ["bsnn_hw"]
    # The installed copy (first on sys.path, ahead of the editable install) resolves every sub-package.
    code = (
        "import sys, importlib.util; sys.path.insert(0, sys.argv[1]); import bsnn_hw; "
        "print(bsnn_hw.__file__); "
        "[print(importlib.util.find_spec(m).origin) for m in ('bsnn_hw.train', 'bsnn_hw.hdl', 'bsnn_hw.sim')]; "
        "print(importlib.util.find_spec('hdl'), importlib.util.find_spec('train'))"
    )
    p = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    for line in lines[:4]:
        assert line.startswith(str(target / "bsnn_hw")), line
    assert lines[4] == "None None"
