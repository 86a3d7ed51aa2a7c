"""``aisync job start|ls|show|wait|abort|report``.

Jobs (prefetch, copy, sync, evict) run on the cluster's primary proxy; these commands start them,
follow their progress (a bar on stderr, fed by long-polling ``GET /v1/jobs/{id}?wait=``) and read
their per-object reports. A job keeps running when the command that started it stops waiting.

``job wait`` and ``job start`` (waiting) exit with a status per outcome (:data:`EXIT_STATUS`
in their ``--help``), so a script tells a sync whose deletes were refused from a success.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from aisync.cli.bucket import format_duration, format_time
from aisync.cli.common import (
    CliError,
    UsageFailure,
    bucket_arg,
    count_bar,
    echo_json,
    human_bytes,
    print_table,
    progress_wanted,
    run,
    state_of,
)
from aisync.client import AsyncClient
from aisync.client.types import JOB_FINAL_STATES
from aisync.util.errors import InvalidArgument
from aisync.util.units import parse_duration, parse_size

T = TypeVar("T")

KINDS = ("prefetch", "copy", "sync", "evict")
JOB_STATES = ("pending", "running", "succeeded", "deletes-refused", "failed", "aborted")
#: Exit status of a job command that waited, per final state (1 is also any other error).
EXIT_FAILED, EXIT_DELETES_REFUSED, EXIT_ABORTED, EXIT_STILL_RUNNING = 1, 3, 4, 5
EXIT_STATUS = """\b
Exit status once the job is followed to its end:
  0    succeeded
  1    failed (an error, or objects that failed), or the cluster could not be asked
  2    usage error (nothing was started)
  3    deletes-refused: a sync did everything but its deletes, which --max-delete or the
       shrink guard refused (nothing was deleted; the reason is in the job's error)
  4    aborted
  5    still running when --timeout passed
  130  interrupted (the job keeps running on the cluster)
"""
#: Report actions of a dry run, per job kind, in the order the plan shows them.
PLAN_ACTIONS = {"evict": ("would-evict",)}
PLAN_DEFAULT = ("would-add", "would-update", "would-delete")
PLAN_SHOWN = 50
#: Progress counters of objects a job is done with.
DONE_FIELDS = ("added", "updated", "copied", "deleted", "evicted", "skipped", "failed")
#: JobSpec defaults: ``job show`` lists only the options that differ.
SPEC_DEFAULTS: dict[str, Any] = {
    "prefix": "", "latest": False, "delete": False, "max_delete": None, "shrink_limit": 0.5,
    "dry_run": False, "keep_metadata": False, "bandwidth": None, "rate": None, "retries": 5,
    "batch": 64}
_MAX_DELETE = re.compile(r"^\s*(\d+|\d+(\.\d+)?%)\s*$")

PROGRESS_OPTION = click.option(
    "--progress/--no-progress", default=None,
    help="Force or hide the progress bar (default: shown on a terminal).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the raw record as JSON.")


# -- formatting ---------------------------------------------------------------------------------


def _done(progress: dict) -> int:
    return sum(int(progress.get(f) or 0) for f in DONE_FIELDS)


def describe_job(spec: dict) -> str:
    text = f"{spec.get('kind')} {spec.get('bucket')}"
    if spec.get("destination"):
        text += f" -> {spec['destination']}"
    params = spec.get("params", spec)
    options = []
    for key, default in SPEC_DEFAULTS.items():
        value = params.get(key, default)
        if value == default:
            continue
        if key == "bandwidth":
            value = f"{human_bytes(value)}/s"
        options.append(key.replace("_", "-") if value is True else f"{key.replace('_', '-')}={value}")
    return text + (f" ({', '.join(options)})" if options else "")


def _summary(job: dict) -> list[str]:
    p = job.get("progress") or {}
    took = ""
    if job.get("started_at") and job.get("finished_at"):
        seconds = (datetime.fromisoformat(job["finished_at"])
                   - datetime.fromisoformat(job["started_at"])).total_seconds()
        took = f" in {format_duration(seconds)}"
    lines = [f"job {job['id']} {job.get('state')}{took}: {describe_job(job)}"]
    counts = ", ".join(f"{f} {int(p.get(f) or 0)}" for f in ("listed", "unchanged", *DONE_FIELDS)
                       if p.get(f) or f in ("listed", "failed"))
    lines.append(f"  {counts}; {human_bytes(int(p.get('bytes') or 0))} transferred")
    if p.get("note"):
        lines.append(f"  note: {p['note']}")
    if int(p.get("failed") or 0):
        lines.append(f"  failures: aisync job report {job['id']} --action failed")
    return lines


# -- building job specs ------------------------------------------------------------------------


def job_options(func: Callable) -> Callable:
    options = [
        click.option("--prefix", default="", help="Only objects whose names start with this."),
        click.option("--latest", is_flag=True,
                     help="prefetch: also re-fetch copies that changed at the source."),
        click.option("--delete", is_flag=True,
                     help="sync: remove copies the source no longer has."),
        click.option("--max-delete", metavar="N|N%",
                     help="Refuse to delete more than N objects (or N% of the cached ones)."),
        click.option("--keep-metadata", is_flag=True,
                     help="evict: keep the bucket registered (only the copies go)."),
        click.option("--bandwidth", metavar="SIZE",
                     help="Bytes per second for the whole job, e.g. 100MiB."),
        click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
                     help="Object requests per second for the whole job."),
        click.option("--retries", type=click.IntRange(1, 20), default=None, metavar="N",
                     help="Attempts per object (default 5)."),
        click.option("--from", "peers", multiple=True, metavar="ZONE",
                     help="prefetch/sync: read from this attached remote cluster's copies "
                     "first (repeatable); the source serves what it does not hold current."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_spec(kind: str, bucket: str, dest: str | None, *, prefix: str = "",
               latest: bool = False, delete: bool = False, max_delete: str | None = None,
               keep_metadata: bool = False, bandwidth: str | None = None,
               rate: float | None = None, retries: int | None = None,
               dry_run: bool = False, peers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The job spec of the command line, with usage errors found before the server is asked."""
    src = bucket_arg(bucket)
    if kind == "copy" and not dest:
        raise UsageFailure(f"a copy job needs a destination: aisync job start copy {src} DEST")
    if kind in ("prefetch", "evict") and dest:
        raise UsageFailure(f"a {kind} job takes no destination (got {dest!r})")
    if delete and kind != "sync":
        raise UsageFailure("--delete applies to sync jobs only")
    if peers and kind not in ("prefetch", "sync"):
        raise UsageFailure("--from applies to prefetch and sync jobs")
    if max_delete is not None and not _MAX_DELETE.match(max_delete):
        raise UsageFailure(f"--max-delete takes a count or a percentage (100 or 1%), "
                           f"not {max_delete!r}")
    per_second = None
    if bandwidth is not None:
        try:
            per_second = parse_size(bandwidth.strip().removesuffix("/s"))
        except InvalidArgument as exc:
            raise UsageFailure(f"--bandwidth: {exc.message}") from None
        if per_second <= 0:
            raise UsageFailure("--bandwidth must be above zero")
    spec: dict[str, Any] = {"kind": kind, "bucket": str(src), "prefix": prefix,
                            "latest": latest, "delete": delete, "dry_run": dry_run,
                            "keep_metadata": keep_metadata}
    optional = {"destination": str(bucket_arg(dest)) if dest else None,
                "max_delete": max_delete.strip() if max_delete else None,
                "bandwidth": per_second, "rate": rate, "retries": retries}
    spec.update({k: v for k, v in optional.items() if v is not None})
    if peers:
        spec["peers"] = list(peers)
    return spec


def sdk_call(ctx: click.Context, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """One SDK call on a fresh client, run to completion."""

    async def go() -> T:
        async with state_of(ctx).client() as client:
            return await call(client)

    return run(go())


def print_fields(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {'-' if value in (None, '') else value}")


# -- waiting -----------------------------------------------------------------------------------


async def _follow(client: AsyncClient, job: dict, progress: bool | None,
                  timeout: float | None = None) -> dict:
    """Wait for the job with a progress bar on stderr; the job as it is at the end."""
    enabled = progress_wanted(progress)
    with count_bar(None, enabled, desc=job["id"]) as bar:

        def show(current: dict) -> None:
            p = current.get("progress") or {}
            done, planned = _done(p), int(p.get("planned") or 0)
            bar.total = max(planned, done) or None
            bar.n = done
            bar.set_postfix_str(f"{human_bytes(int(p.get('bytes') or 0))}, "
                                f"{human_bytes(p.get('bytes_per_s') or 0)}/s, "
                                f"{int(p.get('failed') or 0)} failed", refresh=False)
            bar.refresh()

        show(job)
        return await client.wait_job(job["id"], timeout=timeout, poll=1 if enabled else 20,
                                     on_progress=show)


def _interrupted(job_id: str) -> CliError:
    return CliError(f"interrupted; job {job_id} keeps running on the cluster "
                    f"(aisync job wait {job_id}, or aisync job abort {job_id})", exit_code=130)


def _finish(job: dict, as_json: bool, extra: dict | None = None) -> None:
    """Print the final job (summary or JSON); unless it succeeded, exit with the status of
    its state (:data:`EXIT_STATUS`)."""
    if as_json:
        echo_json({**job, **(extra or {})})
    else:
        for line in _summary(job):
            click.echo(line)
    state, error = job.get("state"), job.get("error")
    if state == "deletes-refused":
        raise CliError(f"job {job['id']} {error or 'deletes refused'}; nothing was deleted",
                       exit_code=EXIT_DELETES_REFUSED)
    if state in ("failed", "aborted"):
        raise CliError(f"job {job['id']} {state}" + (f": {error}" if error else ""),
                       exit_code=EXIT_FAILED if state == "failed" else EXIT_ABORTED)
    if state not in JOB_FINAL_STATES:
        raise CliError(f"job {job['id']} is still {state}", exit_code=EXIT_STILL_RUNNING)


def _print_plan(job: dict, plan: dict) -> None:
    kinds = PLAN_ACTIONS.get(job["kind"], PLAN_DEFAULT)
    counts = plan.get("counts") or {}
    entries = plan.get("entries") or []
    click.echo(f"plan of dry-run job {job['id']} ({describe_job(job)}):")
    shown = [[k, str(counts.get(k, 0))] for k in kinds]
    shown += [[k, str(n)] for k, n in sorted(counts.items()) if k not in kinds]
    for action, n in shown:
        click.echo(f"  {action:<{max(len(a) for a, _ in shown)}}  {n}")
    if entries:
        click.echo()
        print_table([[e["action"], e["name"], e.get("reason") or ""] for e in entries],
                    ["ACTION", "NAME", "REASON"])
        total = sum(counts.get(k, 0) for k in kinds)
        if total > len(entries):
            click.echo(f"(first {len(entries)} of {total}; all of them: "
                       f"aisync job report {job['id']})")
    note = (job.get("progress") or {}).get("note")
    if note:
        click.echo(f"note: {note}")
    if job.get("state") in ("succeeded", "deletes-refused"):
        click.echo("nothing was changed (dry run)")


# -- job -----------------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Start, follow and inspect prefetch, copy, sync and evict jobs.

    \b
    Example:
      aisync job start prefetch s3://datasets --prefix train/
      aisync job ls --state running
    """


@job.command(epilog=EXIT_STATUS)
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("bucket")
@click.argument("dest", required=False)
@job_options
@click.option("--dry-run", is_flag=True, help="Only plan: list what would change, change nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the job until it finishes (exit status below).")
@PROGRESS_OPTION
@JSON_OPTION
@click.pass_context
def start(ctx: click.Context, kind: str, bucket: str, dest: str | None, dry_run: bool,
          wait: bool, progress: bool | None, as_json: bool, **options: Any) -> None:
    """Start a job on BUCKET: prefetch, copy (to DEST), sync (optionally to DEST) or evict.

    \b
    prefetch  fetch the source's objects the cluster does not hold yet
    copy      copy BUCKET's objects into DEST (never deletes)
    sync      make the copies (or DEST) match the source; --delete removes what it lost
    evict     drop the cluster's copies (the source is untouched)

    By default it waits with a progress bar and prints a summary; a dry run prints the plan.

    \b
    Examples:
      aisync job start prefetch s3://datasets --prefix train/ --bandwidth 100MiB
      aisync job start sync fs://nfs-home --delete --max-delete 1% --dry-run
      aisync job start copy s3://datasets ais://snapshot --no-wait
    """
    spec = build_spec(kind, bucket, dest, dry_run=dry_run, **options)
    cli = state_of(ctx)
    started_ids: list[str] = []

    async def go() -> tuple[dict, dict | None]:
        async with cli.client() as client:
            started = await client.start_job(spec)
            started_ids.append(started["id"])
            if not (wait or dry_run):
                return started, None
            click.echo(f"started job {started['id']} ({describe_job(started)})", err=True)
            final = await _follow(client, started, progress)
            plan = None
            if dry_run and final.get("state") in JOB_FINAL_STATES:
                page = await client.get_job_report(final["id"], PLAN_ACTIONS.get(
                    kind, PLAN_DEFAULT), limit=PLAN_SHOWN)
                plan = {"counts": page.get("counts") or {}, "entries": page.get("entries") or []}
            return final, plan

    try:
        final, plan = run(go())
    except KeyboardInterrupt:
        if started_ids:
            raise _interrupted(started_ids[0]) from None
        raise
    if not (wait or dry_run):
        if as_json:
            echo_json(final)
        else:
            click.echo(f"started job {final['id']} ({describe_job(final)})")
            click.echo(f"  follow it: aisync job wait {final['id']}")
        return
    if plan is not None and not as_json:
        _print_plan(final, plan)
        if final.get("state") == "succeeded":
            return
    _finish(final, as_json, {"plan": plan} if plan is not None else None)


@job.command(name="ls")
@click.option("--state", "states", multiple=True, metavar="STATE[,STATE]",
              help=f"Only jobs in these states ({', '.join(JOB_STATES)}).")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@JSON_OPTION
@click.pass_context
def ls(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List jobs, newest first.

    \b
    Examples:
      aisync job ls
      aisync job ls --state running,pending
    """
    wanted = [s.strip() for group in states for s in group.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(JOB_STATES))
    if unknown:
        raise UsageFailure(f"unknown job state(s) {', '.join(unknown)}; "
                           f"use {', '.join(JOB_STATES)}")

    jobs = sdk_call(ctx, lambda client: client.list_jobs(wanted or None, limit))
    if as_json:
        echo_json(jobs)
        return
    rows = []
    for j in jobs:
        p = j.get("progress") or {}
        rows.append([j["id"], j.get("kind", "?"), j.get("state", "?"), j.get("bucket") or "-",
                     j.get("destination") or "-", f"{_done(p)}/{int(p.get('planned') or 0)}",
                     str(int(p.get("failed") or 0)), format_time(j.get("created_at"))])
    print_table(rows, ["ID", "KIND", "STATE", "BUCKET", "DEST", "DONE/PLANNED", "FAILED",
                       "CREATED"])
    if not rows:
        click.echo("(no jobs)", err=True)


@job.command()
@click.argument("job_id", metavar="JOB")
@JSON_OPTION
@click.pass_context
def show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job: what it does, its state, progress and error.

    \b
    Example:
      aisync job show j-5da7bcfc9c9b
    """
    j = sdk_call(ctx, lambda client: client.get_job(job_id))
    if as_json:
        echo_json(j)
        return
    p = j.get("progress") or {}
    counts = ", ".join(f"{f} {int(p.get(f) or 0)}" for f in ("listed", "unchanged", "planned",
                                                             *DONE_FIELDS))
    rows = [("id", j["id"]), ("job", describe_job(j)), ("state", j.get("state")),
            ("dry run", "yes" if j.get("dry_run") else "no"), ("schedule", j.get("schedule")),
            ("created", format_time(j.get("created_at"))),
            ("started", format_time(j.get("started_at"))),
            ("finished", format_time(j.get("finished_at"))),
            ("progress", f"{_done(p)} of {int(p.get('planned') or 0)} planned done; {counts}"),
            ("transferred", f"{human_bytes(int(p.get('bytes') or 0))} "
                            f"({p.get('objects_per_s', 0)} obj/s, "
                            f"{human_bytes(p.get('bytes_per_s') or 0)}/s)"),
            ("checkpoint", j.get("checkpoint")), ("note", p.get("note")),
            ("error", j.get("error"))]
    print_fields(rows)


@job.command(name="wait", epilog=EXIT_STATUS)
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", metavar="DURATION", help="Give up after this long (e.g. 90s, 10m).")
@PROGRESS_OPTION
@JSON_OPTION
@click.pass_context
def wait_cmd(ctx: click.Context, job_id: str, timeout: str | None, progress: bool | None,
             as_json: bool) -> None:
    """Wait for a job to finish; the exit status says how it ended (see below).

    \b
    Example:
      aisync job wait j-5da7bcfc9c9b --timeout 10m
    """
    try:
        seconds = parse_duration(timeout) if timeout is not None else None
    except InvalidArgument as exc:
        raise UsageFailure(f"--timeout: {exc.message}") from None

    async def go() -> dict:
        async with state_of(ctx).client() as client:
            return await _follow(client, await client.get_job(job_id), progress, seconds)

    try:
        final = run(go())
    except KeyboardInterrupt:
        raise _interrupted(job_id) from None
    _finish(final, as_json)


@job.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
def abort(ctx: click.Context, job_id: str) -> None:
    """Abort a pending or running job (a finished job is left as it is).

    \b
    Example:
      aisync job abort j-5da7bcfc9c9b
    """
    j = sdk_call(ctx, lambda client: client.abort_job(job_id))
    p = j.get("progress") or {}
    if j.get("state") == "aborted":
        click.echo(f"aborted job {j['id']} ({_done(p)} of {int(p.get('planned') or 0)} "
                   f"planned objects were done)")
    else:
        click.echo(f"job {j['id']} already {j.get('state')}; nothing to abort")


@job.command()
@click.argument("job_id", metavar="JOB")
@click.option("--changes", is_flag=True, help="Only objects the job changed, skipped or failed.")
@click.option("--action", "actions", metavar="A[,B]",
              help="Only these actions (added, updated, deleted, evicted, skipped, failed, "
                   "would-add …).")
@JSON_OPTION
@click.pass_context
def report(ctx: click.Context, job_id: str, changes: bool, actions: str | None,
           as_json: bool) -> None:
    """Print a job's per-object report: counts per action, then ACTION NAME REASON rows.

    \b
    Examples:
      aisync job report j-5da7bcfc9c9b --changes
      aisync job report j-5da7bcfc9c9b --action failed,skipped
    """
    wanted = [a.strip() for a in (actions or "").split(",") if a.strip()] or None

    def keep(action: str) -> bool:
        return (not changes or action != "unchanged") and (wanted is None or action in wanted)

    async def go() -> None:
        async with state_of(ctx).client() as client:
            first = await client.get_job_report(job_id, wanted, limit=1)
            counts = {a: n for a, n in sorted((first.get("counts") or {}).items()) if keep(a)}
            entries = client.iter_job_report(job_id, wanted)
            if as_json:
                echo_json({"counts": counts,
                           "entries": [e async for e in entries if keep(e["action"])]})
                return
            width = max(len(a) for a in [*counts, "ACTION"])
            for action, n in counts.items():
                click.echo(f"{action:<{width}}  {n}")
            if not counts:
                click.echo("(no report entries)", err=True)
                return
            click.echo()
            click.echo(f"{'ACTION':<{width}}  NAME  REASON")
            async for e in entries:
                if keep(e["action"]):
                    click.echo(f"{e['action']:<{width}}  {e['name']}  {e.get('reason') or ''}"
                               .rstrip())

    run(go())
