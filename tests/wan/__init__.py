"""WAN emulation for tests and benchmarks: zones and sources in network namespaces joined by
emulated links (delay, loss, rate). See ``netem.py``."""
