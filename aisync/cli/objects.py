"""``aisync object put|get|ls|head|rm``."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath

import click

from aisync.cli.common import (
    CliError,
    UsageFailure,
    binary_stdin,
    binary_stdout,
    byte_bar,
    count_bar,
    echo_json,
    format_mtime,
    human_bytes,
    object_arg,
    prefix_arg,
    progress_wanted,
    run,
    state_of,
)
from aisync.client import AsyncClient, ObjectEntry, ObjectInfo, parse_range
from aisync.util.errors import AisyncError, InvalidArgument
from aisync.util.names import BucketRef, validate_object_name

PROGRESS_OPTION = click.option(
    "--progress/--no-progress", default=None,
    help="Force or hide the progress bar (default: shown on a terminal).")
JOBS_OPTION = click.option("--jobs", "-j", default=8, show_default=True,
                           type=click.IntRange(1, 256), help="Concurrent requests.")
#: How many failures a bulk command prints before summarizing the rest.
MAX_ERRORS_SHOWN = 10


@click.group(name="object")
def object_group() -> None:
    """Upload, download, list, inspect and delete objects.

    \b
    Example:
      aisync object put ./img.jpg ais://train/images/
      aisync object ls ais://train/images/
    """


# -- put -------------------------------------------------------------------------------------


@object_group.command()
@click.argument("src")
@click.argument("dst")
@click.option("--recursive", "-r", is_flag=True,
              help="Upload every file under the SRC directory; DST is the key prefix.")
@JOBS_OPTION
@PROGRESS_OPTION
@click.pass_context
def put(ctx: click.Context, src: str, dst: str, recursive: bool, jobs: int,
        progress: bool | None) -> None:
    """Upload a file (or '-' for stdin, or a directory with --recursive).

    DST ending in '/' (or a bare bucket) gets the file's name appended. With --recursive,
    keys are DST's prefix (a '/' is added if missing) plus each file's relative path.

    \b
    Example:
      aisync object put model.bin ais://ckpt/run1/model.bin
      aisync object put ./data ais://train/data/ --recursive --jobs 16
      tar c ./logs | aisync object put - ais://backup/logs.tar
    """
    ref, key = prefix_arg(dst)
    cli = state_of(ctx)
    if recursive:
        if src == "-":
            raise UsageFailure("--recursive needs a directory, not '-'")
        root = Path(src)
        if not root.is_dir():
            raise UsageFailure(f"{src}: not a directory (needed by --recursive)")
        prefix = key if not key or key.endswith("/") else key + "/"
        run(_put_tree(cli.client(), ref, root, prefix, jobs, progress))
        return
    if src == "-":
        if not key or key.endswith("/"):
            raise UsageFailure("uploading stdin needs a full object name, e.g. ais://b/name")
        name = key
        data: object = binary_stdin()
        size = None
    else:
        path = Path(src)
        if path.is_dir():
            raise UsageFailure(f"{src} is a directory; use --recursive to upload a tree")
        size = path.stat().st_size
        name = key + path.name if not key or key.endswith("/") else key
        data = path
    _check_name(name)
    started = time.monotonic()

    async def go() -> ObjectInfo:
        with byte_bar(size, progress_wanted(progress, size), desc=name) as bar:
            async with cli.client() as client:
                return await client.put_object(ref, name, data, progress=bar.update)

    info = run(go())
    click.echo(f"uploaded {ref}/{info.name} ({human_bytes(info.size)}"
               f"{_rate(info.size, time.monotonic() - started)})")


def _walk(root: Path) -> Iterator[tuple[Path, str, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            try:
                if not path.is_file():
                    continue
                size = path.stat().st_size
            except OSError:
                continue
            yield path, PurePosixPath(path.relative_to(root)).as_posix(), size


async def _put_tree(client: AsyncClient, ref: BucketRef, root: Path, prefix: str, jobs: int,
                    progress: bool | None) -> None:
    files = list(_walk(root))
    total = sum(size for _, _, size in files)
    for _, rel, _ in files:
        _check_name(prefix + rel)
    failures: list[str] = []
    done_bytes = 0
    started = time.monotonic()
    queue: Iterator[tuple[Path, str, int]] = iter(files)
    with byte_bar(total, progress_wanted(progress), desc=f"{len(files)} files") as bar:

        async def worker() -> None:
            nonlocal done_bytes
            for path, rel, _size in queue:
                try:
                    info = await client.put_object(ref, prefix + rel, path, progress=bar.update)
                    done_bytes += info.size
                except (AisyncError, OSError) as exc:
                    failures.append(f"{path}: {_message(exc)}")

        async with client:
            await asyncio.gather(*(worker() for _ in range(min(jobs, max(1, len(files))))))
    elapsed = time.monotonic() - started
    ok = len(files) - len(failures)
    click.echo(f"uploaded {ok} file(s), {human_bytes(done_bytes)} to {ref}/{prefix} in "
               f"{elapsed:.1f} s{_rate(done_bytes, elapsed, always=True)}")
    _report_failures(failures, "upload")


# -- get -------------------------------------------------------------------------------------


@object_group.command()
@click.argument("uri")
@click.argument("dest", required=False, metavar="[PATH|-]")
@click.option("--output", "-o", "output", metavar="PATH|-",
              help="Where to write (default: the object's base name in the current "
                   "directory; a directory gets the base name appended; '-' is stdout).")
@click.option("--range", "byte_range", metavar="A-B",
              help="Only bytes A to B inclusive ('A-' to the end, '-N' the last N).")
@PROGRESS_OPTION
@click.pass_context
def get(ctx: click.Context, uri: str, dest: str | None, output: str | None,
        byte_range: str | None, progress: bool | None) -> None:
    """Download an object to a file or stdout ('-').

    The destination may be given as -o PATH or as a second argument. The file is written
    next to its destination and renamed into place when complete.

    \b
    Example:
      aisync object get ais://train/images/0001.jpg -o ./downloads/
      aisync object get ais://backup/logs.tar - | tar x
    """
    if dest is not None and output is not None:
        raise UsageFailure("give the destination either as an argument or with -o, not both")
    output = output if output is not None else dest
    ref, name = object_arg(uri)
    try:
        rng = parse_range(byte_range) if byte_range else None
    except AisyncError as exc:
        raise UsageFailure(exc.message) from exc
    cli = state_of(ctx)
    bar_holder: list = []

    def on_info(info: ObjectInfo) -> None:
        expected = info.size if rng is None else None
        bar = byte_bar(expected, progress_wanted(progress, info.size), desc=name)
        bar_holder.append(bar)

    def on_progress(n: int) -> None:
        if bar_holder:
            bar_holder[0].update(n)

    started = time.monotonic()

    async def go(target: Path | None) -> ObjectInfo:
        async with cli.client() as client:
            if target is None:
                return await client.download_to(ref, name, binary_stdout(), byte_range=rng,
                                                progress=on_progress, on_info=on_info)
            return await client.download(ref, name, target, byte_range=rng,
                                         progress=on_progress, on_info=on_info)

    try:
        if output == "-":
            run(go(None))
            binary_stdout().flush()
            return
        path = Path(output) if output else Path(PurePosixPath(name).name)
        if path.is_dir():
            path = path / PurePosixPath(name).name
        run(go(path))
    finally:
        for bar in bar_holder:
            bar.close()
    size = path.stat().st_size
    click.echo(f"wrote {path} ({human_bytes(size)}{_rate(size, time.monotonic() - started)})")


# -- ls --------------------------------------------------------------------------------------


@object_group.command(name="ls")
@click.argument("uri")
@click.option("--prefix", default="", help="Only names starting with this prefix.")
@click.option("--limit", type=click.IntRange(1), help="Stop after this many objects.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects.")
@click.option("--page-size", default=1000, show_default=True, type=click.IntRange(1, 10000),
              help="Objects fetched per request.")
@click.option("--cached", is_flag=True,
              help="Cached buckets: only what the cluster holds (default: the source's listing "
                   "merged with the cluster's copies, with a CACHED column).")
@click.pass_context
def ls(ctx: click.Context, uri: str, prefix: str, limit: int | None, as_json: bool,
       page_size: int, cached: bool) -> None:
    """List a bucket's objects in name order (streamed page by page).

    \b
    Example:
      aisync object ls ais://train/images/ --limit 20
      aisync object ls ais://train --prefix images/ --json
      aisync object ls s3://datasets --cached
    """
    ref, uri_prefix = prefix_arg(uri)
    if uri_prefix and prefix:
        raise UsageFailure("give the prefix either in the URI or with --prefix, not both")
    prefix = prefix or uri_prefix
    cli = state_of(ctx)
    if limit is not None:
        page_size = min(page_size, limit)
    run(_ls(cli.client(), ref, prefix, limit, as_json, page_size, cached))


def _cache_state(entry: ObjectEntry) -> str:
    if entry.cached is None:
        return ""
    if not entry.cached:
        return "no"
    return "yes" if entry.in_source is not False else "yes (gone at source)"


async def _ls(client: AsyncClient, ref: BucketRef, prefix: str, limit: int | None,
              as_json: bool, page_size: int, cached: bool = False) -> None:
    count = total = 0
    width = 0
    backed = ref.provider != "ais" or bool(ref.namespace)
    async with client:
        if as_json:
            click.echo("[", nl=False)
        entries = client.iter_objects(ref, prefix=prefix, page_size=page_size, cached=cached)
        async for entry in _limited(entries, limit):
            if as_json:
                doc = {"name": entry.name, "size": entry.size, "checksum": entry.checksum,
                       "mtime_ns": entry.mtime_ns}
                if entry.cached is not None:
                    doc.update(cached=entry.cached, version=entry.version,
                               in_source=entry.in_source)
                click.echo(("," if count else "") + "\n  " + json.dumps(doc), nl=False)
            else:
                if count == 0:
                    width = max(30, min(80, len(entry.name) + 2))
                    click.echo(f"{'NAME':<{width}}  {'SIZE':>10}  MODIFIED"
                               + ("              CACHED" if backed else ""))
                modified = entry.mtime_ns or int(((entry.version or {}).get("last_modified")
                                                  or 0) * 1e9)
                line = (f"{entry.name:<{width}}  {human_bytes(entry.size):>10}  "
                        f"{format_mtime(modified)}")
                click.echo(line + (f"  {_cache_state(entry)}" if backed else ""))
            count += 1
            total += entry.size
    if as_json:
        click.echo("\n]" if count else "]")
    else:
        where = f"{ref}/{prefix}" if prefix else str(ref)
        click.echo(f"{count} object(s), {human_bytes(total)} in {where}"
                   + (" (limit reached)" if limit is not None and count >= limit else ""),
                   err=True)


async def _limited(entries: AsyncIterator[ObjectEntry],
                   limit: int | None) -> AsyncIterator[ObjectEntry]:
    count = 0
    async for entry in entries:
        if limit is not None and count >= limit:
            return
        yield entry
        count += 1


# -- head ------------------------------------------------------------------------------------


@object_group.command()
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@click.pass_context
def head(ctx: click.Context, uri: str, as_json: bool) -> None:
    """Show an object's size, checksum and modification time.

    \b
    Example:
      aisync object head ais://train/images/0001.jpg
    """
    ref, name = object_arg(uri)

    async def go() -> ObjectInfo:
        async with state_of(ctx).client() as client:
            return await client.head_object(ref, name)

    info = run(go())
    if as_json:
        echo_json({"bucket": info.bucket, "provider": info.provider, "name": info.name,
                   "size": info.size, "checksum": info.checksum, "mtime_ns": info.mtime_ns,
                   "etag": info.etag})
        return
    click.echo(f"object:   {ref}/{info.name}")
    click.echo(f"size:     {info.size} ({human_bytes(info.size)})")
    click.echo(f"checksum: {info.checksum or '-'}")
    click.echo(f"modified: {format_mtime(info.mtime_ns)}")


# -- rm --------------------------------------------------------------------------------------


@object_group.command()
@click.argument("uri")
@click.option("--recursive", "-r", is_flag=True,
              help="Delete every object under the URI's prefix (and --prefix).")
@click.option("--prefix", default="", help="With --recursive: only names with this prefix.")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
@JOBS_OPTION
@PROGRESS_OPTION
@click.pass_context
def rm(ctx: click.Context, uri: str, recursive: bool, prefix: str, dry_run: bool, jobs: int,
       progress: bool | None) -> None:
    """Delete an object, or with --recursive every object under a prefix.

    \b
    Example:
      aisync object rm ais://train/images/0001.jpg
      aisync object rm ais://train --recursive --prefix tmp/ --dry-run
    """
    cli = state_of(ctx)
    if not recursive:
        if prefix:
            raise UsageFailure("--prefix needs --recursive")
        ref, name = prefix_arg(uri)
        if not name or name.endswith("/"):
            raise UsageFailure(f"{uri} names no object; add --recursive to delete every "
                               "object under it")
        run(_rm_one(cli.client(), ref, name, dry_run))
        return
    ref, uri_prefix = prefix_arg(uri)
    if uri_prefix and prefix:
        raise UsageFailure("give the prefix either in the URI or with --prefix, not both")
    run(_rm_tree(cli.client(), ref, prefix or uri_prefix, dry_run, jobs, progress))


async def _rm_one(client: AsyncClient, ref: BucketRef, name: str, dry_run: bool) -> None:
    async with client:
        if dry_run:
            info = await client.head_object(ref, name)
            click.echo(f"would delete {ref}/{name} ({human_bytes(info.size)})")
            return
        await client.delete_object(ref, name)
    click.echo(f"deleted {ref}/{name}")


async def _rm_tree(client: AsyncClient, ref: BucketRef, prefix: str, dry_run: bool, jobs: int,
                   progress: bool | None) -> None:
    where = f"{ref}/{prefix}" if prefix else str(ref)
    count = total = 0
    failures: list[str] = []
    async with client:
        if dry_run:
            async for entry in client.iter_objects(ref, prefix=prefix):
                click.echo(f"would delete {ref}/{entry.name} ({human_bytes(entry.size)})")
                count += 1
                total += entry.size
            click.echo(f"would delete {count} object(s), {human_bytes(total)} from {where}")
            return
        with count_bar(None, progress_wanted(progress), desc="deleting") as bar:
            token: str | None = None
            while True:  # page by page: memory does not grow with the bucket
                page = await client.list_objects(ref, prefix=prefix, token=token)
                entries = iter(page.objects)

                async def worker(entries: Iterator[ObjectEntry] = entries) -> None:
                    nonlocal count, total
                    for entry in entries:
                        try:
                            await client.delete_object(ref, entry.name)
                            count += 1
                            total += entry.size
                        except AisyncError as exc:
                            if not isinstance(exc, FileNotFoundError):
                                failures.append(f"{ref}/{entry.name}: {exc.message}")
                        bar.update(1)

                await asyncio.gather(*(worker() for _ in range(jobs)))
                if not page.next_token or page.next_token == token:
                    break
                token = page.next_token
    click.echo(f"deleted {count} object(s), {human_bytes(total)} from {where}")
    _report_failures(failures, "delete")


# -- helpers ---------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    try:
        validate_object_name(name)
    except InvalidArgument as exc:
        raise UsageFailure(exc.message) from exc


def _rate(nbytes: int, seconds: float, always: bool = False) -> str:
    if seconds <= 0 or (nbytes < 1024**2 and not always):
        return ""
    return f", {nbytes / seconds / 1024**2:.1f} MiB/s"


def _message(exc: BaseException) -> str:
    if isinstance(exc, AisyncError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _report_failures(failures: list[str], what: str) -> None:
    if not failures:
        return
    for line in failures[:MAX_ERRORS_SHOWN]:
        click.echo(f"error: {line}", err=True)
    if len(failures) > MAX_ERRORS_SHOWN:
        click.echo(f"error: ... and {len(failures) - MAX_ERRORS_SHOWN} more", err=True)
    raise CliError(f"{len(failures)} {what}(s) failed")
