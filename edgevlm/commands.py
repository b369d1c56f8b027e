"""How a package adds sub-commands to `edgevlm`: the one registration mechanism of the command line.

Every package with commands has a `cli` module with `register(commands: Commands)`; `edgevlm.cli`
imports those modules (downward) and calls them in turn, so no package names another. A cli module
stays light at import time: a handler imports the heavy optional dependencies it needs (torch,
fastapi, dask, ...) when it runs, and a missing one becomes the install hint of `missing_extra`.
This module imports nothing from edgevlm, so every package may use it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

#: Import name of each optional dependency -> the pyproject extra that installs it.
OPTIONAL_EXTRAS: dict[str, str] = {
    "torch": "models", "transformers": "models", "PIL": "models", "safetensors": "models",
    "fastapi": "testbed", "uvicorn": "testbed", "httpx": "testbed",
    "dask": "dask", "distributed": "dask",
}

DISTRIBUTION = "edgevlm-sim"


@dataclass
class Commands:
    """The sub-parser groups a package adds to: `edgevlm COMMAND` and `edgevlm trace COMMAND`."""

    top: argparse._SubParsersAction
    _trace: argparse._SubParsersAction | None = None

    @property
    def trace(self) -> argparse._SubParsersAction:
        """`edgevlm trace ...`, made where its first command is added (so it lists after `run`)."""
        if self._trace is None:
            t = self.top.add_parser("trace", help="trace files: validate, generate synthetic, inspect, extract from "
                                                  "a VLM")
            self._trace = t.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
        return self._trace

    def add(self, name: str, func: Callable[[argparse.Namespace], int], help: str, description: str | None = None,
            *, group: str = "top", raw: bool = False) -> argparse.ArgumentParser:
        """A sub-command running `func(args) -> exit code`; `raw` keeps the description's line breaks."""
        subparsers = self.trace if group == "trace" else self.top
        p = subparsers.add_parser(name, help=help, description=description or help,
                                  formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
        p.set_defaults(func=func)
        return p


def add_output_options(p: argparse.ArgumentParser, out_help: str, *, audit: bool = False,
                       progress: bool = False, quiet: bool = True) -> None:
    """The output options commands share: --out, and optionally --audit, --no-progress, -q."""
    p.add_argument("--out", help=out_help)
    if audit:
        p.add_argument("--audit", action="store_true",
                       help="record every transfer and GPU pass (and KV use per scheduler step) so `check` also "
                            "verifies link capacity, GPU busy time and the KV cache on every step")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def missing_extra(exc: ImportError) -> str | None:
    """The install hint when `exc` is a missing optional dependency; None for any other import error."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    extra = OPTIONAL_EXTRAS.get(exc.name.partition(".")[0])
    if extra is None:
        return None
    return f"install the [{extra}] extra: pip install '{DISTRIBUTION}[{extra}]'"
