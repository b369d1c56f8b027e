"""edgevlm-sim: a discrete-event simulator for collaborative edge-to-server VLM inference.

Installed, the sub-packages `edgevlm.sim`, `edgevlm.traces`, `edgevlm.models`, `edgevlm.analysis`,
`edgevlm.testbed` and `edgevlm.scenarios` live under this package (setuptools' package-dir maps the
repository's top-level folders here). In a source checkout they are those top-level folders, so the
repository root joins this package's search path: `python -m pytest` and `python -m edgevlm` then
run the checkout's code without an install.
"""

from pathlib import Path as _Path

#: The distribution's version (pyproject.toml reads it from here); `edgevlm --version` prints it.
__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "sim" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__ is set by the import system
del _Path, _checkout
