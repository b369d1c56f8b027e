from edgevlm.sim.cli import main

raise SystemExit(main())
