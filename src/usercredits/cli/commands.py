"""Operator commands: catalogue import and export, balances, consumption, the expiry job."""

from __future__ import annotations

import json
from datetime import timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import click

from usercredits.catalog import (
    CatalogFormat,
    dumps_catalog,
    export_catalog,
    format_of,
    import_catalog,
    read_catalog,
)
from usercredits.cli.backend import backend_options, service_for
from usercredits.cli.expiry import ExpirySummary, expire_all, json_user_id
from usercredits.cli.output import Column, Output, output_for, tokens, when
from usercredits.cli.upkeep import audit_all, reconcile_all
from usercredits.errors import IdempotencyConflictError, InsufficientCreditsError
from usercredits.models import ActivatedOffer, UserCredits
from usercredits.service import PaymentService

USER_HELP = (
    "USER is the application's user id, matched as a string: a backend that stores "
    "user ids as numbers or ObjectIds will not find them from here."
)


def wonderai_catalog_file() -> Traversable:
    """The WonderAI example catalogue shipped with the package."""
    return files("usercredits.cli").joinpath("wonderai.yaml")


def _output(ctx: click.Context) -> Output:
    rich: bool | None = ctx.find_root().meta.get("usercredits.rich")
    return Output(rich)


# -- catalog ---------------------------------------------------------------------------


@click.group(short_help="Import, export or print offer catalogues.")
def catalog() -> None:
    """Import and export offer catalogues (YAML or JSON files, offers identified by key)."""


@catalog.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; write nothing.")
@backend_options
@click.pass_context
def import_command(
    ctx: click.Context, file: Path, dry_run: bool, db: str | None, mongo_uri: str | None
) -> None:
    """Create or update the offers of FILE by key; importing twice changes nothing.

    FILE is YAML, or JSON when its name ends with .json. Offers refer to each other
    by key (combined_items, unlocked_by). Invalid entries are all reported, by entry
    and field, and nothing is written (exit code 1)."""
    out = output_for(ctx)
    try:
        parsed = read_catalog(file)
    except OSError as e:
        raise click.ClickException(f"cannot read {file}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise click.ClickException(f"cannot read {file}: not UTF-8 text ({e.reason})") from e
    service = service_for(ctx, db, mongo_uri)
    result = import_catalog(service.get_dao_factory().get_offer_dao(), parsed, dry_run=dry_run)
    rows = [[key, "created"] for key in result.created]
    rows += [[key, "updated"] for key in result.updated]
    rows += [[key, "unchanged"] for key in result.unchanged]
    out.table(f"Catalogue {file.name}", [Column("key"), Column("change")], rows)
    verb = "would be" if dry_run else "were"
    out.line(
        f"{len(result.created)} created, {len(result.updated)} updated, "
        f"{len(result.unchanged)} unchanged offers {verb} imported"
        + (" (dry run: nothing written)." if dry_run else ".")
    )


@catalog.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    help="Output format (default: from FILE's extension, else yaml).",
)
@backend_options
@click.pass_context
def export_command(
    ctx: click.Context,
    file: Path | None,
    fmt: CatalogFormat | None,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Write every stored offer as a catalogue to FILE (standard output by default).

    The export imports back to the same offers. Offers without a key cannot be
    exported (exit code 1)."""
    service = service_for(ctx, db, mongo_uri)
    document = export_catalog(service.get_dao_factory().get_offer_dao())
    text = dumps_catalog(document, fmt or (format_of(file) if file else "yaml"))
    if file is None:
        click.echo(text, nl=False)
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as e:
        raise click.ClickException(f"cannot write {file}: {e.strerror or e}") from e
    click.echo(f"Exported {len(document['offers'])} offers to {file}.", err=True)


@catalog.command("example")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def example_command(file: Path | None) -> None:
    """Write the WonderAI example catalogue (the demo's) to FILE or standard output."""
    text = wonderai_catalog_file().read_text(encoding="utf-8")
    if file is None:
        click.echo(text, nl=False)
    else:
        file.write_text(text, encoding="utf-8")


# -- balance and consume ---------------------------------------------------------------


def positive_count(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"must be a positive whole number, got {value!r}")
    return number


def credits_of(service: PaymentService, user: str) -> UserCredits:
    credits = service.load_user_credits(user)
    if credits is None:
        raise click.ClickException(
            f"unknown user {user!r}: no credits are stored for this user id "
            "(user ids are matched as strings)"
        )
    return credits


def _group_json(offer: ActivatedOffer) -> dict[str, Any]:
    return {
        "offer_group": offer.offer_group,
        "tokens": offer.tokens,
        "starts": None if offer.starts is None else offer.starts.isoformat(),
        "expires": None if offer.expires is None else offer.expires.isoformat(),
    }


@click.command(epilog=USER_HELP, short_help="Show a user's token balances.")
@click.argument("user")
@click.option("--group", "-g", "group", metavar="GROUP", help="Only this offer group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@backend_options
@click.pass_context
def balance(
    ctx: click.Context,
    user: str,
    group: str | None,
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Show USER's token balance in each offer group, with its validity window.

    An unknown user is an error (exit code 1); a group the user does not have has a
    balance of 0."""
    out = output_for(ctx)
    credits = credits_of(service_for(ctx, db, mongo_uri), user)
    offers = credits.offers
    if group is not None:
        found = credits.offer(group)
        if found is None:
            known = ", ".join(o.offer_group for o in offers) or "none"
            out.notice(f"user {user!r} has no offer group {group!r} (their groups: {known})")
            found = ActivatedOffer(offer_group=group)
        offers = [found]
    if as_json:
        document = {
            "user_id": json_user_id(credits.user_id),
            "groups": [_group_json(o) for o in offers],
        }
        click.echo(json.dumps(document, indent=2))
        return
    if not offers:
        out.line(f"User {user!r} has credits but no offer group.")
        return
    out.table(
        f"Balances of user {user!r}",
        [Column("group"), Column("tokens", right=True), Column("starts"), Column("expires")],
        [[o.offer_group, tokens(o.tokens), when(o.starts, "-"), when(o.expires)] for o in offers],
    )


@click.command(epilog=USER_HELP, short_help="Consume tokens of a user's offer group.")
@click.argument("user")
@click.argument("group")
@click.argument("count", callback=positive_count)
@click.option(
    "--allow-negative",
    is_flag=True,
    help="Record the consumption even if the balance goes below zero (post-paid use).",
)
@click.option(
    "--idempotency-key",
    "-k",
    metavar="KEY",
    help="Consume at most once with this key: a retry with it consumes nothing more.",
)
@backend_options
@click.pass_context
def consume(
    ctx: click.Context,
    user: str,
    group: str,
    count: int,
    allow_negative: bool,
    idempotency_key: str | None,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Consume COUNT tokens of USER's GROUP (a positive integer).

    Refused, with nothing changed (exit code 1), when the balance would go below
    zero, unless --allow-negative; an unknown user is an error (exit code 1)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    credits_of(service, user)
    replay = idempotency_key is not None and (
        service.get_dao_factory()
        .get_token_timetable_dao()
        .find_by_key(user, idempotency_key=idempotency_key)
        is not None
    )
    try:
        service.consume_tokens(
            user,
            group,
            count,
            allow_negative=allow_negative,
            idempotency_key=idempotency_key,
        )
    except InsufficientCreditsError as e:
        raise click.ClickException(f"refused, nothing consumed: {e}") from e
    except IdempotencyConflictError as e:
        raise click.ClickException(f"refused, nothing consumed: {e}") from e
    left = service.remaining_tokens(user, group)
    if replay:
        out.line(
            f"Already recorded with key {idempotency_key!r}: nothing more consumed. "
            f"Balance of {group!r}: {tokens(left)}."
        )
    else:
        out.line(
            f"Consumed {tokens(count)} tokens of {group!r} for user {user!r}. "
            f"Balance: {tokens(left)}."
        )


# -- expire ----------------------------------------------------------------------------


def _parse_low(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, int]:
    minimums: dict[str, int] = {}
    for value in values:
        group, sep, minimum = value.rpartition("=")
        try:
            parsed = int(minimum)
        except ValueError:
            parsed = None
        if not sep or not group or parsed is None:
            raise click.BadParameter(f"expected GROUP=MIN with an integer MIN, got {value!r}")
        if group in minimums:
            raise click.BadParameter(f"group {group!r} is given twice")
        minimums[group] = parsed
    return minimums


@click.command(short_help="Run the expiry job over every user (a cron job).")
@click.option(
    "--warn-days",
    type=click.IntRange(min=0),
    metavar="N",
    help="Warn about offer groups expiring within N days.",
)
@click.option(
    "--low",
    multiple=True,
    metavar="GROUP=MIN",
    callback=_parse_low,
    help="Warn when GROUP's balance is at most MIN (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@backend_options
@click.pass_context
def expire(
    ctx: click.Context,
    warn_days: int | None,
    low: dict[str, int],
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Expire the orders whose window ended, for every user with credits (a cron job).

    Unused tokens of expired orders are removed, spent groups dropped, and warnings
    listed. Users are streamed, never all loaded. Exit code 1 when any user's check
    failed (the others are still processed)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    warn_before = None if warn_days is None else timedelta(days=warn_days)
    with out.progress("Checking users", None) as advance:
        summary = expire_all(service, warn_before=warn_before, low=low or None, advance=advance)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        render_expiry(out, summary)
    if summary.failures:
        for user_id, error in summary.failures:
            click.echo(f"Error: user {user_id!r}: {error}", err=True)
        ctx.exit(1)


def render_expiry(out: Output, summary: ExpirySummary, max_warnings: int = 50) -> None:
    """The summary table of an expiry run and the first ``max_warnings`` warnings."""
    rows = [
        ["users checked", tokens(summary.users_checked)],
        ["orders expired", tokens(summary.orders_expired)],
    ]
    rows += [
        [f"tokens removed from {group}", tokens(count)]
        for group, count in sorted(summary.removed_tokens.items())
    ]
    rows.append(["offer groups removed", tokens(summary.groups_removed)])
    counts = summary.warning_counts()
    rows += [[f"warnings: {reason}", tokens(counts[reason])] for reason in sorted(counts)]
    if summary.failures:
        rows.append(["failures", tokens(len(summary.failures))])
    out.table(
        f"Expiry run at {when(summary.now)} UTC",
        [Column("what"), Column("count", right=True)],
        rows,
    )
    if summary.warnings:
        shown = summary.warnings[:max_warnings]
        out.table(
            "Warnings",
            [
                Column("user"),
                Column("group"),
                Column("reason"),
                Column("expires"),
                Column("tokens", right=True),
            ],
            [
                [str(user_id), w.offer_group, w.reason, when(w.expires), tokens(w.tokens)]
                for user_id, w in shown
            ],
        )
        if len(summary.warnings) > len(shown):
            out.line(f"... and {len(summary.warnings) - len(shown)} more (--json lists all).")


# -- reconcile and audit -----------------------------------------------------------------


def _report_failures(ctx: click.Context, failures: list[tuple[Any, str]]) -> None:
    for user_id, error in failures:
        click.echo(f"Error: user {user_id!r}: {error}", err=True)


@click.command(short_help="Complete interrupted operations of every user.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@backend_options
@click.pass_context
def reconcile(ctx: click.Context, as_json: bool, db: str | None, mongo_uri: str | None) -> None:
    """Complete every operation a crash or a failed database call interrupted (settlements,
    expiries, refunds), for every user with credits, and bring each group's cached balance up
    to its ledger. Safe to run at any time, as often as wanted. Exit code 1 when any user's
    run failed (the others are still processed)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    with out.progress("Reconciling users", None) as advance:
        summary = reconcile_all(service, advance=advance)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        document = summary.to_json()
        out.table(
            f"Reconcile run at {when(summary.now)} UTC",
            [Column("what"), Column("count", right=True)],
            [
                ["users checked", tokens(summary.users_checked)],
                ["orders completed", tokens(document["completed_orders"])],
                ["groups repaired", tokens(document["repaired_groups"])],
            ],
        )
    if summary.failures:
        _report_failures(ctx, summary.failures)
        ctx.exit(1)


@click.command(short_help="Check every balance against its ledger.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@backend_options
@click.pass_context
def audit(ctx: click.Context, as_json: bool, db: str | None, mongo_uri: str | None) -> None:
    """Check, for every user and offer group, that the balance read equals the sum of the
    group's ledger lines and the tokens its live grants hold minus its debt. Exit code 1 when
    a group disagrees or a user cannot be audited."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    with out.progress("Auditing users", None) as advance:
        summary = audit_all(service, advance=advance)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        out.table(
            f"Audit at {when(summary.now)} UTC",
            [Column("what"), Column("count", right=True)],
            [
                ["users checked", tokens(summary.users_checked)],
                ["groups checked", tokens(summary.groups_checked)],
                ["groups disagreeing", tokens(len(summary.mismatches))],
            ],
        )
        if summary.mismatches:
            out.table(
                "Groups disagreeing with their ledger",
                [
                    Column("user"),
                    Column("group"),
                    Column("balance", right=True),
                    Column("ledger sum", right=True),
                    Column("live - debt", right=True),
                ],
                [
                    [
                        str(user),
                        g.offer_group,
                        tokens(g.balance),
                        tokens(g.ledger_sum),
                        tokens(g.live_remainders - g.debt),
                    ]
                    for user, g in summary.mismatches
                ],
            )
        else:
            out.line("Every balance agrees with its ledger.")
    _report_failures(ctx, summary.failures)
    if not summary.ok:
        ctx.exit(1)
