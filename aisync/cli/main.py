"""The ``aisync`` command line: the root group, global options and error reporting.

Expected failures (typed aisync errors, unreachable nodes, missing local files) print
``error: <message>`` on stderr and exit 1 (2 for usage errors), without a traceback; ``-v``
adds the traceback. Anything else is a bug and propagates as usual.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from aisync import __version__
from aisync.cli.auth import auth
from aisync.cli.bucket import bucket
from aisync.cli.cluster import cluster
from aisync.cli.common import DEFAULT_ENDPOINT, CliError, CliState, UsageFailure, describe_oserror
from aisync.cli.demo import demo
from aisync.cli.jobs import job
from aisync.cli.node import node
from aisync.cli.objects import object_group
from aisync.cli.remote import remote
from aisync.cli.schedules import schedule
from aisync.util.errors import AisyncError, ConfigError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class AisyncGroup(click.Group):
    """Turns expected exceptions from any subcommand into ``error: ...`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # the reader went away (``aisync object get URI - | head``): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except KeyboardInterrupt:
            raise CliError("interrupted", exit_code=130) from None
        except ConfigError as exc:
            self._trace(ctx)
            raise UsageFailure(exc.message) from None
        except AisyncError as exc:
            self._trace(ctx)
            raise CliError(exc.message) from None
        except OSError as exc:
            self._trace(ctx)
            raise CliError(describe_oserror(exc)) from None

    @staticmethod
    def _trace(ctx: click.Context) -> None:
        state = ctx.find_object(CliState)
        if state is not None and state.verbose:
            traceback.print_exc(file=sys.stderr)


@click.group(cls=AisyncGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--endpoint", envvar="AISYNC_ENDPOINT", metavar="URL",
              help="Proxy URL of the cluster (env AISYNC_ENDPOINT; default: the endpoint "
                   f"recorded by `cluster up`, else {DEFAULT_ENDPOINT}).")
@click.option("--token", envvar="AISYNC_TOKEN", metavar="TOKEN", show_envvar=False,
              help="The cluster's admin token (env AISYNC_TOKEN; default: the admin-token "
                   "file `cluster up` wrote in the cluster dir).")
@click.option("-v", "--verbose", count=True, help="Show tracebacks of errors.")
@click.version_option(__version__, "--version", prog_name="aisync")
@click.pass_context
def cli(ctx: click.Context, endpoint: str | None, token: str | None, verbose: int) -> None:
    """aisync: multi-cluster object storage and caching for AI workloads.

    \b
    Example:
      aisync cluster up --targets 3 --detach
      aisync bucket create ais://train
      aisync object put ./data ais://train/data/ --recursive
      aisync object ls ais://train/data/
      aisync job start prefetch s3://datasets --prefix train/
    """
    ctx.obj = CliState(endpoint_option=endpoint, token_option=token, verbose=verbose)


cli.add_command(node)
cli.add_command(demo)
cli.add_command(cluster)
cli.add_command(bucket)
cli.add_command(object_group)
cli.add_command(job)
cli.add_command(schedule)
cli.add_command(remote)
cli.add_command(auth)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``aisync``)."""
    cli.main(args=argv, prog_name="aisync")


if __name__ == "__main__":  # pragma: no cover
    main()
