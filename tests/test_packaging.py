"""What `pip install .` puts on the import path: one top-level package, `edgevlm`, read from the built
wheel's RECORD and from the installed distribution's file list in a fresh virtual environment."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import edgevlm

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("edgevlm", "sim", "traces", "models", "analysis", "testbed", "scenarios")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the checkout (the build never writes into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "weights", "runs"))
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = dist.glob("edgevlm_sim-*.whl")
    return whl


def _top_level(paths) -> set[str]:
    """First path component of every file, leaving out the metadata and scripts outside site-packages."""
    return {Path(p).parts[0] for p in paths
            if not Path(p).parts[0].endswith((".dist-info", ".data")) and Path(p).parts[0] != ".."}


def test_the_wheel_holds_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        record = [row[0] for row in csv.reader(io.StringIO(z.read(f"{info}/RECORD").decode()))]
        top_level = z.read(f"{info}/top_level.txt").decode().split() if f"{info}/top_level.txt" in z.namelist() \
            else None
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert _top_level(record) == {"edgevlm"}, sorted(_top_level(record))
    assert top_level in (None, ["edgevlm"])
    # every package of the checkout is inside it, with the data users run
    for sub in ("sim/engine.py", "traces/schema.py", "models/extract.py", "analysis/report.py", "testbed/validate.py",
                "scenarios/quickstart.yaml", "traces/synthetic-v1.parquet", "cli.py", "commands.py", "__main__.py"):
        assert f"edgevlm/{sub}" in record, sub
    # every package folder of the checkout (sub-packages too) is installed, so no import fails after `pip install .`
    for init in sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("__init__.py")
                       if "weights" not in p.parts):
        rel = init.relative_to(ROOT).as_posix()
        assert (rel if rel.startswith("edgevlm/") else f"edgevlm/{rel}") in record, rel
    assert f"\nVersion: {edgevlm.__version__}\n" in metadata
    assert "edgevlm = edgevlm.cli:main" in entry_points


def test_installed_in_a_fresh_venv_only_edgevlm_is_importable(wheel, tmp_path):
    """pip install into a new venv (system site-packages lend the dependencies): the distribution's
    file list has one top-level package; the `edgevlm` script and `python -m edgevlm` run from it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import importlib.metadata as m, importlib.util, json, sysconfig\n"
        "site = sysconfig.get_paths()['purelib']\n"
        "(d,) = [d for d in m.distributions(path=[site]) if d.metadata['Name'] == 'edgevlm-sim']\n"
        "import edgevlm.sim\n"
        "print(json.dumps({'files': [str(f) for f in d.files], 'site': site, 'file': edgevlm.sim.__file__,\n"
        "                  'sim': importlib.util.find_spec('sim') is not None and\n"
        "                         importlib.util.find_spec('sim').origin.startswith(site)}))\n")
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert _top_level(got["files"]) == {"edgevlm"}, sorted(_top_level(got["files"]))
    assert got["file"].startswith(got["site"]) and not got["sim"]
    for cmd in ([str(venv / "bin" / "edgevlm"), "--version"], [str(py), "-m", "edgevlm", "--version"]):
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout.strip() == f"edgevlm-sim {edgevlm.__version__}", run.stderr
