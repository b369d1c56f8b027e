"""A real edge<->server system for the DESIGN.md §4 protocol, and the simulator validated against it.

server.py   `edgevlm serve`: FastAPI + uvicorn inference service around a models/ backend
edge.py     `edgevlm edge`: a real edge client running the simulator's own policy objects
netns.py    network namespaces, veth pairs and tc shaping (root only), always torn down
config.py   TESTBED.yaml (pydantic)
calibrate.py measured service times -> the simulator's `profile` latency CSV; edge prep/crop times
validate.py `edgevlm validate`: the same arrivals through the simulator and the testbed, compared
Imports here stay light: torch, fastapi and httpx load inside the command handlers.
"""
