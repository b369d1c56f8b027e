"""edgevlm-sim's SimPy engine: `sim.run(scenario) -> Result` with `.events` and `.summary`."""

from sim.errors import ConfigError, UserError
from sim.runner import Result, run
from sim.scenario import Scenario, load_scenario, parse_scenario

__all__ = ["ConfigError", "Result", "Scenario", "UserError", "load_scenario", "parse_scenario", "run"]
