"""Value checks pydantic's lax mode lets through, applied to every scenario block, whatever its kind.

Lax validation turns `count: true` into 1 and `rate_per_s: "5"` into 5.0, and a float field takes
`.inf` and `.nan` unless each model forbids them. A scenario with an infinite rate or time limit
never ends, so after validation this walks the YAML beside the validated model and rejects:
- any non-finite float (`.inf`, `.nan`, 1.0e999), naming its path;
- a boolean or a text where the model holds a number (YAML 1.1 reads `1e3` as text: the message
  says to write 1.0e3);
- an integer beyond MAX_INT (except `seed`): byte counts beyond it overflow the int64 event log;
- a run that would see more than MAX_ARRIVALS arrivals (stop.requests, or rate x clients x time_s):
  it would not finish, and beyond float resolution a time-limited run stops advancing its clock.
Walking the values, not the field types, keeps this independent of the registries' config classes.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from edgevlm.sim.errors import ConfigError


MAX_INT = 10 ** 12
MAX_ARRIVALS = 10 ** 9


def check_values(raw: Any, model: BaseModel) -> None:
    """Raise ConfigError at the first non-finite, out-of-bounds, bool or text number, or an endless run."""
    _walk(raw, model, "")
    _check_run_size(model)


def _check_run_size(sc: Any) -> None:
    stop = getattr(sc, "stop", None)
    if stop is None:
        return
    if stop.requests is not None and stop.requests > MAX_ARRIVALS:
        raise ConfigError("stop.requests", f"at most {MAX_ARRIVALS:.0e} requests in one run (got {stop.requests})")
    rate = getattr(sc.clients.arrival, "rate_per_client_s", None)
    if stop.time_s is not None and rate is not None:
        expected = rate() * sc.clients.count * stop.time_s
        if expected > MAX_ARRIVALS:
            raise ConfigError("stop.time_s", f"{stop.time_s:g} s at {rate() * sc.clients.count:g} requests/s "
                                             f"(clients.count x clients.arrival) is {expected:.2g} arrivals; at most "
                                             f"{MAX_ARRIVALS:.0e} in one run")


def _walk(raw: Any, value: Any, path: str) -> None:
    if isinstance(value, BaseModel):
        if isinstance(raw, dict):
            for key, sub in raw.items():
                if isinstance(key, str) and key in type(value).model_fields:
                    _walk(sub, getattr(value, key), f"{path}.{key}" if path else key)
        return
    if isinstance(value, (list, tuple)):
        if isinstance(raw, (list, tuple)):
            for i, (r, v) in enumerate(zip(raw, value)):
                _walk(r, v, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        if isinstance(raw, dict):
            for key, sub in raw.items():
                if key in value:
                    _walk(sub, value[key], f"{path}.{key}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number (got {raw!r})")
    if isinstance(value, int) and abs(value) > MAX_INT and path != "seed":
        raise ConfigError(path, f"must be at most {MAX_INT:.0e} (got {value})")
    if isinstance(raw, bool):
        raise ConfigError(path, f"expected a number, got the boolean {str(raw).lower()}")
    if isinstance(raw, str):
        hint = ""
        try:
            float(raw)
            if "e" in raw.lower() and "." not in raw:
                hint = f"; YAML reads {raw} as text, write it with a decimal point (e.g. {_with_point(raw)})"
        except ValueError:
            pass
        raise ConfigError(path, f"expected a number, got the text {raw!r}{hint}")


def _with_point(text: str) -> str:
    mant, _, exp = text.lower().partition("e")
    return f"{mant}.0e{exp}"
