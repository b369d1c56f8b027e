"""Preflight: every check of a run against its trace and files, done before any output is touched.

Schema errors surface when a scenario is parsed; the checks that need the trace (a JPEG quality
the trace lacks, a policy that needs HD or edge columns), bandwidth-trace files and latency
profiles surface when the `Simulation` is built. Building it first, for every run of a run,
compare or sweep, means an invalid run never removes or overwrites an earlier good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgevlm.sim.engine import Simulation
from edgevlm.sim.scenario import Scenario
from edgevlm.sim.workload import Workload
from edgevlm.sim.errors import ConfigError, UserError


class Sink:
    """The terminal-record callback of a Simulation built before its event log exists."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: Callable[[Any], None] | None = None

    def __call__(self, req: Any) -> None:
        self.target(req)  # type: ignore[misc]


def build_checked(sc: Scenario, workload: Workload, base_dir: Path | None = None) -> tuple[Simulation, Sink]:
    """The run's Simulation (raising the one-line ConfigError of any check) and its unattached sink."""
    sink = Sink()
    return Simulation(sc, workload, sink, base_dir=base_dir), sink


def check_runs(runs: list[tuple[str, Scenario, Workload, Path | None]]) -> None:
    """Build every (label, scenario, workload, base_dir) once; raise one ConfigError listing all failures."""
    errors = []
    for label, sc, workload, base_dir in runs:
        try:
            build_checked(sc, workload, base_dir)
        except UserError as exc:
            errors.append(f"{label}: {exc}" if label else str(exc))
    if errors:
        raise ConfigError("", "\n".join(errors))
