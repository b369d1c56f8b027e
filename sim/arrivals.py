"""Arrival processes: when each client issues a request. A registry keyed by `kind`.

`poisson` gives each client an independent Poisson stream. They are simulated as one
superposed stream of rate N·λ with the client drawn uniformly, which is the same law at O(1)
per arrival. `periodic` models cameras: each client fires every 1/fps seconds from a random phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat

from edgevlm.sim.registry import Registry, Strict
from edgevlm.sim.rng import Batched
from edgevlm.sim.simpy_adapter import start, timeout

if TYPE_CHECKING:
    from edgevlm.sim.engine import Simulation

arrival_processes: Registry = Registry("clients.arrival")


class PoissonArrivals(Strict):
    kind: Literal["poisson"]
    rate_per_s: PositiveFloat = Field(description="requests per second per client")

    def rate_per_client_s(self) -> float:
        return self.rate_per_s


class PeriodicArrivals(Strict):
    kind: Literal["periodic"]
    fps: PositiveFloat = Field(description="requests per second per client, evenly spaced")

    def rate_per_client_s(self) -> float:
        return self.fps


@arrival_processes.register(PoissonArrivals)
def _poisson(cfg: PoissonArrivals, sim: "Simulation", n_clients: int):
    rng = sim.streams["arrivals"]
    gap = Batched(lambda n: rng.exponential(1.0 / (cfg.rate_per_s * n_clients), n))
    client = Batched(lambda n: rng.integers(0, n_clients, n))

    def source():
        env = sim.env
        while True:
            yield timeout(env, gap())
            if not sim.spawn(client()):
                return

    start(source())  # a process nobody waits on (sim/simpy_adapter.py)


@arrival_processes.register(PeriodicArrivals)
def _periodic(cfg: PeriodicArrivals, sim: "Simulation", n_clients: int):
    period = 1.0 / cfg.fps
    phases = sim.streams["arrivals"].uniform(0.0, period, n_clients).tolist()

    def camera(client_id: int, phase: float):
        env = sim.env
        yield env.timeout(phase)
        while sim.spawn(client_id):
            yield env.timeout(period)

    for c, phase in enumerate(phases):
        start(camera(c, phase))

