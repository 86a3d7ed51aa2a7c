"""``aisync remote attach|ls|detach``: peer clusters in other zones, by alias.

An attached remote's buckets are ``ais://@ALIAS/BUCKET`` here (read through and cached like any
source), and cached cloud buckets may name it in ``peers`` to read its copies first.
"""

from __future__ import annotations

import click

from aisync.cli.common import UsageFailure, echo_json, print_table, run, state_of


@click.group()
def remote() -> None:
    """Attach, list and detach remote clusters (peers in other zones).

    \b
    Example:
      aisync remote attach zone-a          # configured as remotes.zone-a on the nodes
      aisync remote ls
      aisync object get ais://@zone-a/checkpoints/step-900.pt -o step-900.pt
      aisync bucket props s3://datasets peers=zone-a
    """


@remote.command()
@click.argument("spec", metavar="ALIAS[=URL[,URL...]]")
@click.pass_context
def attach(ctx: click.Context, spec: str) -> None:
    """Attach a remote cluster that the nodes' configuration names (remotes.ALIAS: its proxy
    URLs and its token); with =URL,..., use only those of its URLs (failover among them).

    Only configured remotes can be attached: no request makes the cluster fetch from a URL its
    operator did not put in the nodes' configuration. Re-attaching an alias replaces its URLs.
    One URL must answer.

    \b
    Example (each node's YAML has remotes: {zone-a: {urls: [...], token: ...}}):
      aisync remote attach zone-a
      aisync remote attach zone-a=http://10.0.1.5:51080
    """
    alias, sep, urls = spec.partition("=")
    if not alias or (sep and not urls):
        raise UsageFailure(f"expected ALIAS or ALIAS=URL[,URL...], got {spec!r}")

    async def go() -> dict:
        async with state_of(ctx).client() as client:
            chosen = [u for u in urls.split(",") if u] if sep else None
            return await client.attach_remote(alias, chosen)

    view = run(go())
    click.echo(f"attached {alias}: cluster {view.get('cluster')} ({view.get('uuid')}) at "
               f"{', '.join(view.get('urls', []))}")


@remote.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the raw list as JSON.")
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """List attached remotes: reachability (asked now), map version, their buckets here.

    \b
    Example:
      aisync remote ls
    """

    async def go() -> list[dict]:
        async with state_of(ctx).client() as client:
            return await client.list_remotes()

    remotes = run(go())
    if as_json:
        echo_json(remotes)
        return
    rows = [[r["alias"], r.get("cluster") or "-", ",".join(r.get("urls", [])),
             "yes" if r.get("reachable") else "NO",
             str(r.get("map_version") or "-"), str(len(r.get("buckets", [])))]
            for r in remotes]
    print_table(rows, ["ALIAS", "CLUSTER", "URLS", "REACHABLE", "MAP", "BUCKETS"])
    if not rows:
        click.echo("no remote clusters attached (aisync remote attach ALIAS)")


@remote.command()
@click.argument("alias")
@click.pass_context
def detach(ctx: click.Context, alias: str) -> None:
    """Detach a remote cluster (refused while buckets of it are registered here).

    \b
    Example:
      aisync remote detach zone-a
    """

    async def go() -> None:
        async with state_of(ctx).client() as client:
            await client.detach_remote(alias)

    run(go())
    click.echo(f"detached {alias}")
