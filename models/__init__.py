"""VLM backends, trace extraction, the tiny local model and codecs (needs the [models] extra)."""
