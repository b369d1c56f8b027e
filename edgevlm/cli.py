"""The `edgevlm` command line: the one entry point, above every package, importing them downward.

COMMAND_MODULES is the one list of packages with commands; each has `register(commands)` (see
edgevlm/commands.py). They keep heavy optional dependencies inside their handlers, so
`edgevlm --help` lists every command without torch, fastapi or dask installed, and a handler
that needs a missing one prints which extra to install. Any other ImportError surfaces.
Bad input prints one line naming the field and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from edgevlm import __version__
from edgevlm.analysis import cli as analysis_cli
from edgevlm.analysis import tradeoff
from edgevlm.analysis.reproduce import cli as reproduce_cli
from edgevlm.commands import DISTRIBUTION, Commands, missing_extra
from edgevlm.models import cli as models_cli
from edgevlm.sim import cli as sim_cli
from edgevlm.sim.errors import UserError
from edgevlm.testbed import cli as testbed_cli
from edgevlm.traces import TraceError

EXIT_USAGE = 2

#: Each package's command registrations, in the order `edgevlm --help` lists them.
COMMAND_MODULES = (sim_cli, analysis_cli, tradeoff, reproduce_cli, testbed_cli, models_cli)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgevlm",
        description="Simulate collaborative edge-to-server VLM inference (two-stage crops, progressive "
                    "refinement) at scale, driven by cached model traces.")
    ap.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = Commands(top=sub)
    for module in COMMAND_MODULES:
        module.register(commands)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, TraceError) as exc:
        for line in str(exc).splitlines() or [""]:  # several errors: one line each
            print(f"edgevlm: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise  # a bug, not a missing optional dependency: show the traceback
        command = " ".join(c for c in (args.command, getattr(args, "trace_command", None)) if c)
        print(f"edgevlm: error: `edgevlm {command}` needs {exc.name}, which is not installed; {hint}",
              file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("edgevlm: error: out of memory; make the scenario smaller (clients.count, stop)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if getattr(exc, "out_dir", None) is not None:  # sim.interrupt.RunInterrupted: partial outputs written
            print(f"edgevlm: interrupted at simulated time {exc.sim_time_s:.3f} s; partial results in "
                  f"{exc.out_dir} (summary.json \"complete\": false)", file=sys.stderr)
        else:
            print("edgevlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
