"""``aisync auth key create|ls|rm``: the S3 access keys of a cluster.

Keys live in the primary proxy's catalog (any proxy's endpoint works). ``create`` shows the
secret once; ``ls`` never shows secrets. A secret given for automation can come from stdin
(``--secret-key -``) so it stays out of shell history and the process list.
"""

from __future__ import annotations

import sys

import click

from aisync.cli.bucket import format_time
from aisync.cli.common import CliError, UsageFailure, echo_json, print_table, stdin_is_tty
from aisync.cli.jobs import JSON_OPTION, sdk_call
from aisync.util.errors import AccessKeyNotFound


@click.group()
def auth() -> None:
    """Who may use the cluster's S3 API: access keys.

    \b
    Example:
      aisync auth key create --description "training jobs"
      aisync auth key ls
      aisync auth key rm AKX4J0T2Q9ZC3M5N7B1D
    """


@auth.group()
def key() -> None:
    """Create, list and remove S3 access keys (access key id + secret key).

    S3 clients sign requests with the pair (AWS Signature V4). A removed key stops working on
    every proxy within `s3.key_cache_seconds` (10 s by default).

    \b
    Example:
      aisync auth key create                               # generated pair, shown once
      aisync auth key create --access-key ci-runner --secret-key - < secret.txt
      aisync auth key ls
      aisync auth key rm ci-runner
    """


def _read_secret() -> str:
    """``--secret-key -``: a hidden prompt on a terminal, else the first line of stdin."""
    if stdin_is_tty():
        return click.prompt("Secret key", hide_input=True, confirmation_prompt=True,
                            err=True)
    line = sys.stdin.readline()
    if not line:
        raise UsageFailure("--secret-key -: nothing on stdin")
    return line.rstrip("\r\n")


@key.command()
@click.option("--access-key", metavar="AK",
              help="The access key id: 3-128 of A-Z a-z 0-9 . _ - (default: generated, "
                   "AK + 18 of A-Z 0-9).")
@click.option("--secret-key", metavar="SK",
              help="The secret: 8-128 printable ASCII characters, no spaces (default: "
                   "generated, 40 characters). '-' reads it from stdin.")
@click.option("--description", "-d", default="", metavar="TEXT",
              help="What the key is for (at most 256 characters).")
@JSON_OPTION
@click.pass_context
def create(ctx: click.Context, access_key: str | None, secret_key: str | None,
           description: str, as_json: bool) -> None:
    """Create an access key pair and print it: the only time the secret is shown.

    Without options both values are generated. Give --access-key and --secret-key to import
    an existing pair (automation, migrating clients).

    \b
    Example:
      aisync auth key create -d "training jobs"
      aisync auth key create --access-key ci-runner --secret-key "$CI_SECRET" --json
      printf '%s\\n' "$CI_SECRET" | aisync auth key create --access-key ci-runner --secret-key -
    """
    if secret_key == "-":
        secret_key = _read_secret()
    created = sdk_call(ctx, lambda c: c.create_access_key(access_key, secret_key, description))
    if as_json:
        echo_json(created)
        return
    click.echo(f"access key: {created.get('access_key')}")
    click.echo(f"secret key: {created.get('secret_key')}")
    if created.get("description"):
        click.echo(f"description: {created['description']}")
    click.echo("Keep the secret key now: it is not shown again.", err=True)


@key.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the raw list as JSON.")
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """List access keys (ids, when created, descriptions; never secrets).

    \b
    Example:
      aisync auth key ls
      aisync auth key ls --json
    """
    keys = sdk_call(ctx, lambda c: c.list_access_keys())
    if as_json:
        echo_json(keys)
        return
    rows = [[k["access_key"], format_time(k.get("created")), k.get("description") or ""]
            for k in keys]
    print_table(rows, ["ACCESS KEY", "CREATED", "DESCRIPTION"])
    if not rows:
        click.echo("no access keys (aisync auth key create)")


@key.command(name="rm")
@click.argument("access_keys", nargs=-1, required=True, metavar="AK [AK...]")
@click.pass_context
def rm(ctx: click.Context, access_keys: tuple[str, ...]) -> None:
    """Remove access keys. Each is tried; unknown ones are reported and make the exit code 1.

    \b
    Example:
      aisync auth key rm AKX4J0T2Q9ZC3M5N7B1D
      aisync auth key rm ci-runner old-laptop
    """

    async def remove_all(client) -> list[str]:
        missing = []
        for access_key in dict.fromkeys(access_keys):
            try:
                await client.delete_access_key(access_key)
            except AccessKeyNotFound as exc:
                missing.append(exc.message)
                continue
            click.echo(f"removed {access_key}")
        return missing

    missing = sdk_call(ctx, remove_all)
    for message in missing[:-1]:
        click.echo(f"error: {message}", err=True)
    if missing:
        raise CliError(missing[-1])
