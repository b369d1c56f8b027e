"""Issue 22 items 17-18: the README's Python API example runs as written, and its install notes name
what the commands need."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.test_cli import ROOT


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("From Python (this block is run by tests/test_docs_api.py")[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path):
    code = readme_python_example()
    assert 'result.summary["latency_s"]["p95"]' in code and "out_dir is None" in code
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")  # "from the repository root", without writing there
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    value, rest = lines[0].split(" ", 1)
    assert float(value) > 0 and rest.startswith("[") and rest.split("] ")[1] != "None"  # p95 value, CI, half-width
    assert lines[1].startswith("True ")
    assert (tmp_path / "runs" / "api-example" / "summary.json").is_file()
    assert lines[-1] == str(tmp_path / "runs" / "api-example" / "summary.json").replace(str(tmp_path) + "/", "")


def test_readme_install_notes_name_what_the_commands_need():
    text = (ROOT / "README.md").read_text().split("## What a run simulates")[0]
    assert "matplotlib and seaborn" in text
    assert "`chromium`" in text and "`chromium-driver`" in text
    deps = (ROOT / "pyproject.toml").read_text().split("dependencies = [")[1].split("]")[0]
    assert "matplotlib" in deps and "seaborn" in deps
