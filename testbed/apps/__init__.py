"""Front doors: the CLI, the controller daemon, demo, labs helpers, benchmarks, chaos, the pytest plugin."""
