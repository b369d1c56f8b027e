"""`python -m edgevlm`: the same command line as the `edgevlm` script."""

from edgevlm.cli import main

raise SystemExit(main())
