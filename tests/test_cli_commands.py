"""The command line's one registration mechanism: every package's commands listed without its optional
dependencies, a missing optional dependency named with its extra, any other ImportError surfacing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import types
from importlib import metadata
from pathlib import Path

import pytest

import edgevlm
from edgevlm import cli
from edgevlm.commands import DISTRIBUTION, OPTIONAL_EXTRAS, Commands, missing_extra
from tests.models_fixtures import make_images, write_manifest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "httpx", "dask", "distributed", "matplotlib", "seaborn",
         "selenium", "PIL")
COMMANDS = ("run", "trace", "sweep", "check", "compare", "report", "tradeoff", "serve", "edge", "testbed", "validate")
MODELS_EXTRA = ("torch", "transformers", "PIL", "safetensors")
TRACE_COMMANDS = ("validate", "synthetic", "inspect", "extract", "fit-codec")

# Runs `edgevlm ARGS` with the named top-level modules made unimportable, as if not installed.
_BLOCKING_MAIN = """
import sys
blocked = set(sys.argv[1].split(",")) - {""}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked or name in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from edgevlm.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
heavy = sorted(m for m in %r if m in sys.modules)
print("heavy imported:", ",".join(heavy), file=sys.stderr)
raise SystemExit(code)
""" % (HEAVY,)


def edgevlm_blocking(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _BLOCKING_MAIN, ",".join(blocked), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def listed(help_text: str) -> set[str]:
    return set(re.findall(r"^ {4}(\S+)", help_text, flags=re.M))


def test_version_prints_the_distribution_version():
    proc = subprocess.run([sys.executable, "-m", "edgevlm", "--version"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{DISTRIBUTION} {edgevlm.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", edgevlm.__version__)


def test_help_lists_every_command_without_any_optional_dependency():
    """`edgevlm --help` with torch, fastapi, dask, ... all unimportable still lists every command and
    imports none of the heavy libraries (they load only in the handlers)."""
    top = edgevlm_blocking(tuple(OPTIONAL_EXTRAS), "--help")
    assert top.returncode == 0, top.stderr
    assert listed(top.stdout) >= set(COMMANDS), top.stdout
    assert top.stderr.strip() == "heavy imported:", top.stderr
    trace = edgevlm_blocking(tuple(OPTIONAL_EXTRAS), "trace", "--help")
    assert trace.returncode == 0 and listed(trace.stdout) >= set(TRACE_COMMANDS), trace.stdout


def test_help_imports_no_heavy_library_even_when_installed():
    proc = edgevlm_blocking((), "--help")
    assert proc.returncode == 0
    assert proc.stderr.strip() == "heavy imported:", proc.stderr


@pytest.mark.parametrize("blocked, args, extra", [
    (MODELS_EXTRA, ("trace", "extract", "--model", "m", "--dataset", "MANIFEST", "--out", "o.parquet"), "models"),
    (MODELS_EXTRA, ("trace", "fit-codec", "--model", "m", "--dataset", "MANIFEST"), "models"),
    (("fastapi", "uvicorn", "httpx"), ("serve", "--model", "."), "testbed"),
])
def test_missing_optional_dependency_names_the_extra(blocked, args, extra, tmp_path):
    """A valid manifest, so the handler gets as far as loading the model."""
    manifest = write_manifest(tmp_path / "m.jsonl", make_images(tmp_path, 1))
    proc = edgevlm_blocking(blocked, *(str(manifest) if a == "MANIFEST" else a for a in args))
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert "Traceback" not in proc.stderr
    assert f"install the [{extra}] extra: pip install '{DISTRIBUTION}[{extra}]'" in first, first
    assert f"`edgevlm {' '.join(a for a in args[:2] if not a.startswith('-'))}` needs" in first, first
    assert any(f"needs {b}," in first for b in blocked), first


def test_a_module_with_a_bug_surfaces_its_import_error():
    """Not an optional dependency: our own module failing to import is a traceback, not an install hint."""
    proc = edgevlm_blocking(("edgevlm.models.extract",), "trace", "extract", "--model", "m", "--dataset", "d.jsonl",
                            "--out", "o.parquet")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "No module named 'edgevlm.models.extract'" in proc.stderr
    assert "install the" not in proc.stderr


def _fake_package(handler):
    def register(commands: Commands) -> None:
        commands.add("fake", handler, "a command of a test package")
    return types.SimpleNamespace(register=register)


def test_import_errors_in_handlers(monkeypatch, capsys):
    """In-process: ModuleNotFoundError of an optional package -> exit 2 with the hint; any other
    ImportError (a missing module of ours, a name missing from an installed optional package) propagates."""
    def needs(exc):
        def handler(args):
            raise exc
        return handler

    cases = {
        "torch.nn": ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"),
        "ours": ModuleNotFoundError("No module named 'edgevlm.sim.nope'", name="edgevlm.sim.nope"),
        "bad name": ImportError("cannot import name 'nope' from 'torch'", name="torch"),
        "unnamed": ImportError("something else"),
    }
    base = cli.COMMAND_MODULES
    for label, exc in cases.items():
        monkeypatch.setattr(cli, "COMMAND_MODULES", base + (_fake_package(needs(exc)),))
        if label == "torch.nn":
            assert cli.main(["fake"]) == 2
            err = capsys.readouterr().err
            assert err.strip() == ("edgevlm: error: `edgevlm fake` needs torch.nn, which is not installed; install "
                                   f"the [models] extra: pip install '{DISTRIBUTION}[models]'")
        else:
            with pytest.raises(ImportError) as info:
                cli.main(["fake"])
            assert info.value is exc, label


def test_a_registration_bug_surfaces(monkeypatch):
    def register(commands):
        raise ImportError("cannot import name 'x' from 'edgevlm.sim.runner'")

    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + (types.SimpleNamespace(register=register),))
    with pytest.raises(ImportError, match="cannot import name 'x'"):
        cli.build_parser()


def test_missing_extra_only_for_optional_packages():
    assert missing_extra(ModuleNotFoundError("x", name="dask.distributed")) == (
        f"install the [dask] extra: pip install '{DISTRIBUTION}[dask]'")
    assert missing_extra(ModuleNotFoundError("x", name="pandas")) is None
    assert missing_extra(ModuleNotFoundError("x", name="torchvision")) is None
    assert missing_extra(ImportError("x", name="torch")) is None


def test_optional_extras_match_pyproject():
    """Every package of the models/testbed/dask extras maps to its extra (by the import names it
    installs), so the hint names the extra pyproject.toml actually defines."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(OPTIONAL_EXTRAS.values()) <= set(extras)
    provides = metadata.packages_distributions()
    checked = 0
    for extra in ("models", "testbed", "dask"):
        for req in extras[extra]:
            dist = re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower()
            tops = [top for top, dists in provides.items() if dist in (d.lower() for d in dists)
                    and not top.startswith("_") and top.isidentifier()]
            if not tops:
                continue  # not installed here
            checked += 1
            assert any(OPTIONAL_EXTRAS.get(t) == extra for t in tops), (req, tops)
    assert checked >= 5
