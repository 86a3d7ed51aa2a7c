"""``aisync bucket create|ls|show|props|rm``, and the time formatting the job commands share."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from aisync.cli.common import (
    UsageFailure,
    bucket_arg,
    echo_json,
    human_bytes,
    print_table,
    run,
    state_of,
    stdin_is_tty,
)
from aisync.util.names import BucketRef


def format_duration(seconds: float | None) -> str:
    """``192.4`` → ``3m12s``; under a minute with one decimal (``4.2s``)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def format_time(iso: str | None) -> str:
    """An ISO timestamp of the API in local time (``2026-11-28 15:33:21``)."""
    if not iso:
        return "-"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def describe_freshness(fresh: dict | None) -> str:
    """The freshness watermark of a cached bucket, in one sentence."""
    if not fresh:
        return "never verified"
    if fresh.get("verified_at"):
        text = (f"in sync with the source as of {format_time(fresh['verified_at'])} "
                f"(lag {format_duration(fresh.get('lag_s'))})")
        if fresh.get("job_id"):
            text += f", verified by job {fresh['job_id']}"
    else:
        text = "never verified"
    if fresh.get("last_job_id"):
        text += f"; last job {fresh['last_job_id']} {fresh.get('last_job_state') or 'unknown'}"
    return text


@click.group()
def bucket() -> None:
    """Create, list, inspect, configure and destroy buckets.

    \b
    Example:
      aisync bucket create ais://train
      aisync bucket ls
      aisync bucket props s3://datasets consistency=validate
    """


@bucket.command()
@click.argument("uri")
@click.option("--profile", help="Backend profile (credentials) in the nodes' configuration.")
@click.option("--region", help="s3:// and oci:// only: region of the source bucket.")
@click.option("--path", help="fs:// only: the directory that is the source of truth, under the "
                             "root of an fs profile of the nodes' configuration (absolute, or "
                             "relative to that root).")
@click.option("--source", help="The bucket's name at the provider, if not the same.")
@click.pass_context
def create(ctx: click.Context, uri: str, profile: str | None, region: str | None,
           path: str | None, source: str | None) -> None:
    """Create a bucket: cluster-local (ais://), or a cached view of a source bucket.

    For a source (s3://, gs://, az://, oci://, fs://) the cluster first checks that it can
    reach it. Endpoints and credentials come only from a backend profile in the nodes'
    configuration (so no request can point the cluster at a host it was not configured for);
    fs:// directories must lie under the root of an fs profile
    (backends: {nfs: {provider: fs, root: /mnt/nfs}}).

    \b
    Examples:
      aisync bucket create ais://train
      aisync bucket create s3://datasets --profile lab
      aisync bucket create fs://nfs-home --path /mnt/nfs/home
    """
    ref = bucket_arg(uri)
    settings: dict[str, str] = {}
    if region:
        settings["region"] = region
    if path:
        settings["path"] = path

    async def go() -> None:
        async with state_of(ctx).client() as client:
            await client.create_bucket(ref, profile=profile, settings=settings, source=source)

    run(go())
    click.echo(f"created {ref}")


@bucket.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the raw bucket list as JSON.")
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """List the cluster's buckets.

    \b
    Example:
      aisync bucket ls --json
    """

    async def go() -> list[dict]:
        async with state_of(ctx).client() as client:
            return await client.list_buckets()

    buckets = run(go())
    if as_json:
        echo_json(buckets)
        return
    rows = []
    for b in buckets:
        ns = f"@{b['namespace']}/" if b.get("namespace") else ""
        rows.append([f"{b.get('provider', 'ais')}://{ns}{b.get('name', '?')}",
                     str(b.get("created", "-"))])
    print_table(rows, ["BUCKET", "CREATED"])
    if not rows:
        click.echo("(no buckets)", err=True)


@bucket.command()
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="Print the raw bucket info as JSON.")
@click.pass_context
def show(ctx: click.Context, uri: str, as_json: bool) -> None:
    """Show a bucket's properties, object count and total size.

    \b
    Example:
      aisync bucket show ais://train
    """
    ref = bucket_arg(uri)

    async def go() -> dict:
        async with state_of(ctx).client() as client:
            return await client.bucket_info(ref)

    info = run(go())
    if as_json:
        echo_json(info)
        return
    _print_props(ref, info)


def _print_props(ref: BucketRef, info: dict) -> None:
    """``key: value`` lines; for a cached bucket, its freshness watermark in words."""
    rows = [("bucket", str(ref))]
    for key in sorted(info):
        if key in ("name", "provider") or (key == "freshness" and info[key] is None):
            continue
        value = info[key]
        if key == "bytes":
            value = f"{value} ({human_bytes(value)})"
        elif key == "freshness":
            value = describe_freshness(value)
        elif key == "max_staleness" and value is not None:
            value = format_duration(value)
        rows.append((key, "-" if value in (None, "") else str(value)))
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {value}")


@bucket.command()
@click.argument("uri")
@click.argument("changes", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--json", "as_json", is_flag=True, help="Print the properties as JSON.")
@click.pass_context
def props(ctx: click.Context, uri: str, changes: tuple[str, ...], as_json: bool) -> None:
    """Show or change a bucket's properties, then print them.

    \b
    consistency=none|validate|synchronize
        none: serve cached copies as they are; validate: ask the source on every
        read and re-fetch changed objects; synchronize: also drop copies the source
        deleted
    max_staleness=DURATION|none
        with validate/synchronize, serve a copy checked within this long without
        asking the source again (e.g. 30s, 5m); none: always ask
    peers=ALIAS[,ALIAS]
        attached remote clusters a cold GET asks first (peer-first reads)
    anonymous_read=true|false
        unsigned S3 requests may read the bucket (any bucket; needs s3.anonymous)

    \b
    Examples:
      aisync bucket props s3://datasets consistency=validate max_staleness=5m
      aisync bucket props s3://datasets max_staleness=none
      aisync bucket props s3://datasets
    """
    ref = bucket_arg(uri)
    body: dict[str, object] = {}
    for change in changes:
        key, sep, value = change.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or not key:
            raise UsageFailure(f"expected KEY=VALUE, got {change!r} "
                               "(e.g. consistency=validate)")
        body[key] = None if key == "max_staleness" and value.lower() in ("none", "null", "") \
            else value

    async def go() -> dict:
        async with state_of(ctx).client() as client:
            if body:
                return await client.set_bucket_props(ref, **body)
            return await client.bucket_info(ref)

    info = run(go())
    if as_json:
        echo_json(info)
        return
    _print_props(ref, info)


@bucket.command()
@click.argument("uri")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be destroyed.")
@click.pass_context
def rm(ctx: click.Context, uri: str, yes: bool, dry_run: bool) -> None:
    """Destroy a bucket and EVERY object in it.

    Asks for confirmation unless --yes is given (without a terminal, --yes is required).

    \b
    Example:
      aisync bucket rm ais://scratch --dry-run
      aisync bucket rm ais://scratch --yes
    """
    ref = bucket_arg(uri)
    client_state = state_of(ctx)

    async def info() -> dict:
        async with client_state.client() as client:
            return await client.bucket_info(ref)

    if dry_run or not yes:
        doc = run(info())
        summary = (f"{ref}: {doc.get('objects', '?')} object(s), "
                   f"{human_bytes(doc.get('bytes'))}")
        if dry_run:
            click.echo(f"would destroy {summary}")
            return
        if not stdin_is_tty():
            raise UsageFailure(f"refusing to destroy {summary} without --yes "
                               "(no terminal to confirm on)")
        click.confirm(f"destroy {summary}?", abort=True, err=True)

    async def destroy() -> None:
        async with client_state.client() as client:
            await client.destroy_bucket(ref)

    run(destroy())
    click.echo(f"destroyed {ref}")
