"""The ``usercredits`` command line (also ``python -m usercredits``).

Commands work on the database ``--db URL`` (or ``USERCREDITS_DB``) names, written before
or after the command's name; without one, on the persistent ``sqlite:///usercredits.db``
of the working directory (see :mod:`usercredits.cli.backend`). An application embedding
the commands passes its own container as the click context's ``obj``
(``main(obj=container)``); the commands then use its service. Exit codes: 0 success, 1 a
failure (invalid data, unknown user, refused consumption, backend error), 2 a usage error
(bad option, missing file, contradictory backend options).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click
from dependency_injector import providers

from usercredits.cli.backend import (
    MEMORY_URL,
    ROOT_DB,
    ROOT_MONGO_URI,
    Backend,
    backend_options,
    choose_backend,
    command_line_options,
)
from usercredits.cli.commands import audit, balance, catalog, consume, expire, reconcile
from usercredits.cli.credits import grant, grants, history, void
from usercredits.cli.demo import DEMO_START, run_demo
from usercredits.cli.output import Output
from usercredits.cli.webhooks import webhooks
from usercredits.clock import FrozenClock
from usercredits.containers import UserCreditsContainer
from usercredits.dao import DaoFactory
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
    epilog="Every command works on the database of --db URL (or USERCREDITS_DB): "
    "sqlite:///file.db, postgresql://user@host/NAME, mongodb://host/NAME, "
    "mongomock://host/NAME or memory://. Without one: sqlite:///usercredits.db in the "
    "working directory. Exit codes: 0 done, 1 failure, 2 usage error.",
)
@click.version_option(package_name="usercredits")
@click.option(
    "--rich/--plain",
    "rich",
    default=None,
    help="Styled tables and progress bars, or plain text (default: rich on a terminal only).",
)
@backend_options
@click.pass_context
def main(ctx: click.Context, rich: bool | None, db: str | None, mongo_uri: str | None) -> None:
    """Prepaid user credits: demo, catalogue, credits, expiry and operator commands."""
    ctx.meta["usercredits.rich"] = rich
    ctx.meta[ROOT_DB] = db
    ctx.meta[ROOT_MONGO_URI] = mongo_uri


DEMO_DB = "wonderai_demo"


def _demo_backend(
    ctx: click.Context, backend: str, db: str | None, mongo_uri: str | None
) -> Backend:
    """The backend the demo plays on: only what its command line names, never the environment."""
    db, mongo_uri = command_line_options(ctx, db, mongo_uri)
    chosen = db is not None or mongo_uri is not None
    if chosen and ctx.get_parameter_source("backend") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give either --backend or --mongo-uri/--db, not both")
    if not chosen:
        url = f"mongomock://localhost/{DEMO_DB}" if backend == "mongomock" else MEMORY_URL
        return Backend(url)
    found = choose_backend(db, mongo_uri, environ={})
    if found.legacy and found.mongo_db is None and not urlsplit(found.url).path.strip("/"):
        return Backend(found.url, mongo_db=DEMO_DB, legacy=True)
    return found


def _has_users(dao_factory: DaoFactory) -> bool:
    """Whether any user has credits in the backend (reading one user id at most)."""
    user_ids = dao_factory.get_user_credits_dao().iter_user_ids(batch_size=1)
    try:
        return next(user_ids, None) is not None
    finally:
        close = getattr(user_ids, "close", None)
        if close is not None:
            close()


@main.command(short_help="Play the WonderAI story (the demo).")
@click.option(
    "--backend",
    type=click.Choice(["memory", "mongomock"]),
    default="memory",
    show_default=True,
    help="Where the story is stored (mongomock needs the mongo extra).",
)
@click.option(
    "--db",
    metavar="URL",
    help="Play the story on the database of this URL (sqlite:///demo.db, mongodb://host/NAME, "
    "...), which must be empty; with --mongo-uri, a MongoDB database name "
    f"(default {DEMO_DB}).",
)
@click.option(
    "--mongo-uri",
    metavar="URI",
    help="Older form: play the story on this MongoDB, whose database must be empty.",
)
@click.pass_context
def demo(ctx: click.Context, backend: str, db: str | None, mongo_uri: str | None) -> None:
    """Play the WonderAI story: offers, orders, payments, consumption, unlocking and expiry.

    The clock is frozen at 2025-01-15 09:00 UTC and moved forward by the story, so every
    run prints the same facts. By default the story is kept in memory; USERCREDITS_DB and
    USERCREDITS_MONGO_URI are ignored: only an explicit --db URL (or --mongo-uri) makes the
    demo write to a database, and that database must be empty."""
    chosen = _demo_backend(ctx, backend, db, mongo_uri)
    client = ManualPaymentClient()
    clock = FrozenClock(DEMO_START)
    container = UserCreditsContainer(
        payment_client=providers.Object(client), clock=providers.Object(clock)
    )
    dao_factory = chosen.open()
    ctx.call_on_close(dao_factory.close)
    offers = dao_factory.get_offer_dao().count({})
    users = _has_users(dao_factory)
    if offers or users:
        raise click.ClickException(
            f"{chosen.describe()} is not empty ({offers} offers, users with credits: "
            f"{'some' if users else 'none'}): the demo needs an empty database "
            "(pass another --db)"
        )
    container.dao_factory.override(providers.Object(dao_factory))
    run_demo(container.service(), client, clock, Output(ctx.find_root().meta["usercredits.rich"]))


main.add_command(catalog)
main.add_command(balance)
main.add_command(consume)
main.add_command(grants)
main.add_command(grant)
main.add_command(void)
main.add_command(history)
main.add_command(expire)
main.add_command(reconcile)
main.add_command(audit)
main.add_command(webhooks)
