"""Status records of a node's background workers (keepalive, read workers, ...), shown by
``/v1/node/status`` and ``aisync cluster status``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerStatus:
    """What the admin API shows about a background worker."""

    name: str
    state: str = "idle"  # idle | running | stopped | failed
    runs: int = 0
    last_run: float | None = None
    last_error: str | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "runs": self.runs,
                "last_run": self.last_run, "last_error": self.last_error, **self.details}
