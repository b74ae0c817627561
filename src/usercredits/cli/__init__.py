"""The ``usercredits`` command line (also ``python -m usercredits``).

Commands work on the MongoDB that ``--mongo-uri``/``--db`` (or
``USERCREDITS_MONGO_URI``/``USERCREDITS_MONGO_DB``) names, or in memory. An
application embedding the commands passes its own container as the click
context's ``obj`` (``main(obj=container)``); the commands then use its service.
Exit codes: 0 success, 1 a failure (invalid data, unknown user, refused
consumption, backend error), 2 a usage error (bad option, missing file).
"""

from __future__ import annotations

from typing import Any

import click
from dependency_injector import providers

from usercredits.cli.backend import open_backend
from usercredits.cli.commands import audit, balance, catalog, consume, expire, reconcile
from usercredits.cli.demo import DEMO_START, run_demo
from usercredits.cli.output import Output
from usercredits.clock import FrozenClock
from usercredits.containers import UserCreditsContainer
from usercredits.errors import UserCreditsError
from usercredits.manual import ManualPaymentClient

__all__ = ["main"]


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserCreditsError as e:
            raise click.ClickException(str(e)) from e


@click.group(
    cls=_Main,
    epilog="Every command but demo works on the MongoDB of --mongo-uri/--db (or "
    "USERCREDITS_MONGO_URI/USERCREDITS_MONGO_DB), else in memory. "
    "Exit codes: 0 done, 1 failure, 2 usage error.",
)
@click.version_option(package_name="usercredits")
@click.option(
    "--rich/--plain",
    "rich",
    default=None,
    help="Styled tables and progress bars, or plain text (default: rich on a terminal only).",
)
@click.pass_context
def main(ctx: click.Context, rich: bool | None) -> None:
    """Prepaid user credits: demo, catalogue, expiry and operator commands."""
    ctx.meta["usercredits.rich"] = rich


@main.command(short_help="Play the WonderAI story (the demo).")
@click.option(
    "--backend",
    type=click.Choice(["memory", "mongomock"]),
    default="memory",
    show_default=True,
    help="Where the story is stored (mongomock needs the mongo extra).",
)
@click.option(
    "--mongo-uri",
    metavar="URI",
    help="Play the story on this MongoDB instead; its database must be empty.",
)
@click.option("--db", default="wonderai_demo", show_default=True, help="Database for --mongo-uri.")
@click.pass_context
def demo(ctx: click.Context, backend: str, mongo_uri: str | None, db: str) -> None:
    """Play the WonderAI story: offers, orders, payments, consumption, unlocking and expiry.

    The clock is frozen at 2025-01-15 09:00 UTC and moved forward by the story, so
    every run prints the same facts. The environment's USERCREDITS_MONGO_URI is
    ignored: only an explicit --mongo-uri makes the demo write to a MongoDB."""
    if mongo_uri and ctx.get_parameter_source("backend") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give either --backend or --mongo-uri, not both")
    uri = mongo_uri or ("mongomock://localhost" if backend == "mongomock" else None)
    client = ManualPaymentClient()
    clock = FrozenClock(DEMO_START)
    container = UserCreditsContainer(
        payment_client=providers.Object(client), clock=providers.Object(clock)
    )
    if uri is not None:
        dao_factory = open_backend(uri, db)
        ctx.call_on_close(dao_factory.close)
        offers = dao_factory.get_offer_dao().count({})
        users = next(iter(dao_factory.get_user_credits_dao().iter_user_ids()), None)
        if offers or users is not None:
            raise click.ClickException(
                f"database {db!r} is not empty ({offers} offers, users with credits: "
                f"{'some' if users is not None else 'none'}): the demo needs an empty one "
                "(pass another --db)"
            )
        container.dao_factory.override(providers.Object(dao_factory))
    run_demo(container.service(), client, clock, Output(ctx.find_root().meta["usercredits.rich"]))


main.add_command(catalog)
main.add_command(balance)
main.add_command(consume)
main.add_command(expire)
main.add_command(reconcile)
main.add_command(audit)
