"""``aisync node``: run one proxy or target process in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from aisync.cli.common import CliError, UsageFailure
from aisync.config import load_node_config
from aisync.util.errors import ConfigError


@click.command()
@click.option("--role", type=click.Choice(["proxy", "target"]),
              help="proxy (gateway) or target (storage); overrides the config file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="AISYNC_CONFIG",
              help="YAML node configuration (see config/node.yaml); env AISYNC_CONFIG.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on (overrides).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Node-private state directory (overrides).")
def node(role: str | None, config_path: str | None, port: int | None,
         data_dir: str | None) -> None:
    """Run one node (proxy or target) until SIGTERM/SIGINT.

    Settings come from the defaults, then --config FILE, then AISYNC_* environment
    variables (e.g. AISYNC_KEEPALIVE__INTERVAL=1s), then these options.

    \b
    Example:
      aisync node --role target --config target.yaml --port 51081 --data-dir /srv/t1
    """
    overrides: dict[str, object] = {}
    if role:
        overrides["role"] = role
    if port is not None:
        overrides["port"] = port
    if data_dir:
        overrides["data_dir"] = str(Path(data_dir))
    try:  # CLI-only variables (AISYNC_ENDPOINT, ...) are skipped by the config loader itself
        cfg = load_node_config(config_path, overrides=overrides)
    except ConfigError as exc:
        raise UsageFailure(exc.message) from exc
    try:
        from aisync.node.launch import run_node

        if cfg.role == "proxy":
            from aisync.proxy.node import ProxyNode as node_class
        else:
            from aisync.target.node import TargetNode as node_class
    except ImportError as exc:
        raise CliError(f"this installation cannot run nodes: {exc}") from exc
    run_node(cfg, node_class)
