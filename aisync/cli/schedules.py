"""``aisync schedule add|ls|show|rm``: jobs started by cron or interval triggers.

Schedules are cluster metadata run by the primary proxy; a schedule never overlaps its own
previous run (a fire during it is recorded as skipped). See docs/sync.md.
"""

from __future__ import annotations

from typing import Any

import click

from aisync.cli.bucket import format_duration, format_time
from aisync.cli.common import UsageFailure, echo_json, print_table
from aisync.cli.jobs import (
    JSON_OPTION,
    KINDS,
    build_spec,
    describe_job,
    job_options,
    print_fields,
    sdk_call,
)
from aisync.util.errors import InvalidArgument
from aisync.util.units import parse_duration

# -- schedule --------------------------------------------------------------------------------------


def _trigger(view: dict) -> str:
    if view.get("cron"):
        return f"cron '{view['cron']}' (UTC)"
    return f"every {format_duration(view.get('every'))}"


def _last_run(view: dict) -> str:
    runs = view.get("runs") or []
    if not runs:
        return "-"
    last = runs[0]
    return f"{last.get('outcome')} {format_time(last.get('fired_at'))}"


@click.group()
def schedule() -> None:
    """Run jobs on a schedule (cron in UTC, or a fixed interval).

    \b
    Example:
      aisync schedule add nightly --cron "0 2 * * *" sync s3://datasets --delete --max-delete 1%
      aisync schedule ls
    """


@schedule.command(name="add")
@click.argument("name")
@click.option("--cron", metavar="EXPR", help="A 5-field cron expression, in UTC.")
@click.option("--every", metavar="DURATION", help="A fixed interval, e.g. 15m, 1h, 1d.")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("bucket")
@click.argument("dest", required=False)
@job_options
@click.option("--replace", is_flag=True, help="Replace a schedule of the same name.")
@JSON_OPTION
@click.pass_context
def add(ctx: click.Context, name: str, cron: str | None, every: str | None, kind: str,
        bucket: str, dest: str | None, replace: bool, as_json: bool, **options: Any) -> None:
    """Add a schedule NAME that starts a job (KIND BUCKET [DEST], as in `job start`).

    When a run is due while the previous one still runs, it is skipped.

    \b
    Examples:
      aisync schedule add nightly --cron "0 2 * * *" sync s3://datasets --delete
      aisync schedule add warm --every 1h prefetch fs://nfs-home --prefix models/
    """
    if (cron is None) == (every is None):
        raise UsageFailure("give exactly one of --cron EXPR or --every DURATION")
    if every is not None:
        try:
            parse_duration(every)
        except InvalidArgument as exc:
            raise UsageFailure(f"--every: {exc.message}") from None
    spec = build_spec(kind, bucket, dest, **options)

    view = sdk_call(ctx, lambda client: client.add_schedule(name, job=spec, cron=cron, every=every,
                                                        replace=replace))
    if as_json:
        echo_json(view)
        return
    click.echo(f"{'replaced' if replace else 'added'} schedule {view.get('name', name)}: "
               f"{_trigger(view)}, {describe_job(view.get('job') or spec)}")
    click.echo(f"  next run: {format_time(view.get('next_run'))}")


@schedule.command(name="ls")
@JSON_OPTION
@click.pass_context
def schedule_ls(ctx: click.Context, as_json: bool) -> None:
    """List the schedules with their next and last runs.

    \b
    Example:
      aisync schedule ls
    """
    views = sdk_call(ctx, lambda client: client.list_schedules())
    if as_json:
        echo_json(views)
        return
    rows = [[v.get("name", "?"), _trigger(v), describe_job(v.get("job") or {}),
             format_time(v.get("next_run")), _last_run(v)] for v in views]
    print_table(rows, ["NAME", "TRIGGER", "JOB", "NEXT RUN", "LAST RUN"])
    if not rows:
        click.echo("(no schedules)", err=True)


@schedule.command(name="show")
@click.argument("name")
@JSON_OPTION
@click.pass_context
def schedule_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a schedule and its recent runs (newest first).

    \b
    Example:
      aisync schedule show nightly
    """
    view = sdk_call(ctx, lambda client: client.get_schedule(name))
    if as_json:
        echo_json(view)
        return
    rows = [("name", view.get("name", name)), ("trigger", _trigger(view)),
            ("job", describe_job(view.get("job") or {})),
            ("created", format_time(view.get("created"))),
            ("next run", format_time(view.get("next_run")))]
    print_fields(rows)
    runs = view.get("runs") or []
    click.echo()
    if not runs:
        click.echo("no runs yet")
        return
    print_table([[format_time(r.get("fired_at")), r.get("outcome") or "?", r.get("job_id") or "-",
                  r.get("reason") or ""] for r in runs], ["FIRED", "OUTCOME", "JOB", "REASON"])


@schedule.command(name="rm")
@click.argument("name")
@click.pass_context
def schedule_rm(ctx: click.Context, name: str) -> None:
    """Remove a schedule (jobs it started are not touched).

    \b
    Example:
      aisync schedule rm nightly
    """
    sdk_call(ctx, lambda client: client.remove_schedule(name))
    click.echo(f"removed schedule {name}")
