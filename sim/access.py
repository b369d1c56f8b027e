"""Each client's access link as compact per-client arrays, so a million clients cost bytes, not objects.

A client holds one class index (1 or 2 bytes); each class has one rate in bit/s (a Python float,
shared by its clients) or one bandwidth-trace profile. A trace class starts each client's trace at
its own offset, kept in one float64 array; the client's shifted view is built when first used.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from edgevlm.sim.bandwidth import ShiftedProfile, period_s


class AccessRates(Sequence):
    """client id -> access rate (float, bit/s) or ShiftedProfile; a read-only sequence over the clients."""

    def __init__(self, class_rates: list, client_class: np.ndarray, offsets: np.ndarray | None = None):
        """class_rates[k]: a float, or a trace profile (then `offsets`, one fraction of its period per
        client, is required); client_class: each client's class index."""
        self._rates = class_rates
        self._class = array("B" if len(class_rates) <= 256 else "H",
                            np.asarray(client_class, np.uint8 if len(class_rates) <= 256 else np.uint16).tobytes())
        self._offsets = offsets
        self._shifted: dict[int, ShiftedProfile] = {}
        self.constant = all(isinstance(r, float) for r in class_rates)

    def class_rates(self) -> tuple[list, array]:
        """(rate of each class, class of each client): `rates[classes[c]]` is `self[c]` where every
        class is constant."""
        return self._rates, self._class

    def __len__(self) -> int:
        return len(self._class)

    def __getitem__(self, client):
        if isinstance(client, slice):
            return [self[c] for c in range(*client.indices(len(self)))]
        rate = self._rates[self._class[client]]
        if rate.__class__ is float:
            return rate
        shifted = self._shifted.get(client)
        if shifted is None:
            shifted = self._shifted[client] = ShiftedProfile(rate, float(self._offsets[client]) * period_s(rate))
        return shifted


def assign_classes(shares: list[float], n_clients: int, permutation: np.ndarray) -> np.ndarray:
    """Each client's class: classes get exact shares of the clients (largest remainders, ties to the
    lower index), laid out in class order and then permuted by `permutation`."""
    counts = [int(s * n_clients) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda k: (-(shares[k] * n_clients - counts[k]), k))
    for k in by_remainder[: n_clients - sum(counts)]:
        counts[k] += 1
    return np.repeat(np.arange(len(shares), dtype=np.int64), counts)[permutation]
