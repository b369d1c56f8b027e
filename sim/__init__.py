"""edgevlm-sim's SimPy engine: `sim.run(scenario) -> Result` with `.events` and `.summary`."""

from edgevlm.sim.errors import ConfigError, UserError
from edgevlm.sim.runner import Result, run
from edgevlm.sim.scenario import Scenario, load_scenario, parse_scenario

__all__ = ["ConfigError", "Result", "Scenario", "UserError", "load_scenario", "parse_scenario", "run"]
