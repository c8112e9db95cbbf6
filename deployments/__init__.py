"""How the flows are served: a local `serve` entry point for the embedded defaults."""
