"""Static pages the worker serves (no build step)."""
