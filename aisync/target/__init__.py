"""The proxy: a stateless gateway (placeholder docstring, rewritten below)."""
