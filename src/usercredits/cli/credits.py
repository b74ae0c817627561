"""Credits commands: a user's grants, a grant made without an order, a void, the ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from usercredits.cli.backend import backend_options, service_for
from usercredits.cli.commands import USER_HELP, credits_of, positive_count
from usercredits.cli.expiry import json_user_id
from usercredits.cli.output import Column, output_for, signed, tokens, when
from usercredits.models import DEFAULT_PRIORITY, GrantSource, GrantStatus, TokenTimetable
from usercredits.usecases.views import MAX_HISTORY

DATE_HELP = (
    "ISO 8601 date or time, e.g. 2025-06-30 or 2025-06-30T18:00:00+02:00; without an offset "
    "it is read as UTC (a date alone: midnight UTC at its start)."
)


def parse_moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or time as an aware UTC datetime; one without an offset is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 date or time such as 2025-06-30 or "
            f"2025-06-30T18:00:00+02:00, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _line_details(line: TokenTimetable) -> str:
    details = []
    if line.order_id is not None:
        details.append(f"order {line.order_id}")
    if line.grant_id is not None and line.grant_id != str(line.order_id):
        details.append(f"grant {line.grant_id}")
    if line.hold_id is not None:
        details.append(f"hold {line.hold_id}")
    if line.held:
        details.append(f"holds {tokens(line.held)} until {when(line.expires)}")
    elif line.tokens > 0 and line.expires is not None:
        details.append(f"expires {when(line.expires)}")
    if line.priority is not None and line.priority != DEFAULT_PRIORITY:
        details.append(f"priority {line.priority}")
    if line.idempotency_key is not None:
        details.append(f"key {line.idempotency_key}")
    if line.note:
        details.append(repr(line.note))
    return ", ".join(details)


@click.command(epilog=USER_HELP, short_help="List a user's grants in burn order.")
@click.argument("user")
@click.option("--group", "-g", "group", metavar="GROUP", help="Only this offer group.")
@click.option(
    "--all", "include_ended", is_flag=True, help="Also the expired, refunded and voided grants."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@backend_options
@click.pass_context
def grants(
    ctx: click.Context,
    user: str,
    group: str | None,
    include_ended: bool,
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """List USER's live grants, in the order their tokens are consumed within each group:
    lowest priority first, then the soonest expiry, then the oldest.

    An unknown user is an error (exit code 1)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    credits = credits_of(service, user)
    found = service.grants(user, group, include_ended=include_ended)
    if as_json:
        document = {
            "user_id": json_user_id(credits.user_id),
            "grants": [g.to_dict() for g in found],
        }
        click.echo(json.dumps(document, indent=2))
        return
    scope = "" if group is None else f" in {group!r}"
    if not found:
        ended = "" if include_ended else " (--all lists the ended ones too)"
        out.line(f"User {user!r} has no {'' if include_ended else 'live '}grants{scope}{ended}.")
        return
    columns = [
        Column("grant"),
        Column("group"),
        Column("source"),
        Column("priority", right=True),
        Column("tokens", right=True),
        Column("remaining", right=True),
        Column("starts"),
        Column("expires"),
    ]
    if include_ended:
        columns.append(Column("status"))
    rows = []
    for g in found:
        row = [
            g.id,
            g.offer_group,
            g.source.value,
            str(g.priority),
            tokens(g.tokens),
            tokens(g.remaining),
            when(g.starts, "-"),
            when(g.expires),
        ]
        if include_ended:
            row.append(g.status.value)
        rows.append(row)
    title = "Grants" if include_ended else "Live grants"
    out.table(f"{title} of user {user!r}{scope}, in burn order", columns, rows)


@click.command(epilog=USER_HELP, short_help="Give tokens without an order (a promotion).")
@click.argument("user")
@click.argument("group")
@click.argument("count", callback=positive_count)
@click.option(
    "--expires",
    metavar="ISO-DATE",
    callback=parse_moment,
    help="When the tokens expire (default: never). " + DATE_HELP,
)
@click.option(
    "--priority",
    type=int,
    default=DEFAULT_PRIORITY,
    show_default=True,
    metavar="N",
    help="Burn order: the grants of lowest priority are consumed first.",
)
@click.option(
    "--source",
    type=click.Choice(["promotional", "adjustment", "purchase"]),
    default=GrantSource.PROMOTIONAL.value,
    show_default=True,
    help="Why the tokens are given: a promotion, an adjustment, a sale made elsewhere.",
)
@click.option(
    "--key",
    "--idempotency-key",
    "-k",
    "key",
    metavar="KEY",
    help="Grant at most once with this key: a retry with it grants nothing more.",
)
@click.option("--note", metavar="TEXT", help="A note recorded with the grant's ledger line.")
@click.option("--json", "as_json", is_flag=True, help="Print the grant as JSON.")
@backend_options
@click.pass_context
def grant(
    ctx: click.Context,
    user: str,
    group: str,
    count: int,
    expires: datetime | None,
    priority: int,
    source: str,
    key: str | None,
    note: str | None,
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Give USER COUNT tokens of GROUP without an order (a promotion, a compensation).

    The tokens repay the group's debt first, like any grant. A past --expires, or a --key
    already used for something else, is refused with nothing changed (exit code 1)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    replay = key is not None and (
        service.get_dao_factory().get_token_timetable_dao().find_by_key(user, idempotency_key=key)
        is not None
    )
    made = service.grant_tokens(
        user,
        group,
        count,
        expires=expires,
        priority=priority,
        source=GrantSource(source),
        idempotency_key=key,
        note=note,
    )
    if as_json:
        click.echo(json.dumps(made.to_dict(), indent=2))
        return
    left = service.remaining_tokens(user, group)
    if replay:
        out.line(
            f"Already granted with key {key!r}: grant {made.id}, nothing more granted. "
            f"Balance of {group!r}: {tokens(left)}."
        )
        return
    expiry = "never expires" if made.expires is None else f"expires {when(made.expires)} UTC"
    out.line(
        f"Granted {tokens(count)} tokens of {group!r} to user {user!r}: grant {made.id}, "
        f"priority {made.priority}, {expiry}. Balance: {tokens(left)}."
    )


@click.command(short_help="Remove what a grant still holds.")
@click.argument("grant_id", metavar="GRANT_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the grant as JSON.")
@backend_options
@click.pass_context
def void(
    ctx: click.Context, grant_id: str, as_json: bool, db: str | None, mongo_uri: str | None
) -> None:
    """Void the grant GRANT_ID (as `usercredits grants` lists it, or an order's id for the
    grant its purchase made): the tokens it still holds are removed now. Voiding twice
    changes nothing more; an unknown id is an error (exit code 1)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    ended = service.void_grant(grant_id)
    if as_json:
        click.echo(json.dumps(ended.to_dict(), indent=2))
        return
    owner = f"of user {str(ended.user_id)!r} in {ended.offer_group!r}"
    left = service.remaining_tokens(ended.user_id, ended.offer_group)
    if ended.status is GrantStatus.VOIDED:
        what = f"Voided grant {ended.id} {owner} ({tokens(ended.tokens)} granted, none left)."
    else:
        what = (
            f"Grant {ended.id} {owner} is {ended.status.value} and holds no tokens: nothing voided."
        )
    out.line(f"{what} Balance of {ended.offer_group!r}: {tokens(left)}.")


@click.command(epilog=USER_HELP, short_help="Show a user's ledger lines, newest first.")
@click.argument("user")
@click.option("--group", "-g", "group", metavar="GROUP", help="Only this offer group.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_HISTORY),
    default=50,
    show_default=True,
    metavar="N",
    help=f"At most N lines (1 to {MAX_HISTORY}).",
)
@click.option(
    "--before",
    metavar="LINE_ID",
    help="Only lines recorded before this one: the next page after a page ending with it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@backend_options
@click.pass_context
def history(
    ctx: click.Context,
    user: str,
    group: str | None,
    limit: int,
    before: str | None,
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """Show USER's ledger lines (every change of a balance), newest first, a page at a time.

    A full page ends with the --before value of the next one. An unknown user is an error
    (exit code 1)."""
    out = output_for(ctx)
    service = service_for(ctx, db, mongo_uri)
    credits = credits_of(service, user)
    lines = service.history(user, group, limit=limit, before=before)
    next_before = str(lines[-1].id) if len(lines) == limit else None
    if as_json:
        document = {
            "user_id": json_user_id(credits.user_id),
            "lines": [line.to_dict() for line in lines],
            "next_before": next_before,
        }
        click.echo(json.dumps(document, indent=2))
        return
    scope = "" if group is None else f" in {group!r}"
    if not lines:
        page = "" if before is None else f" before line {before}"
        out.line(f"User {user!r} has no ledger lines{scope}{page}.")
        return
    out.table(
        f"Ledger of user {user!r}{scope}, newest first",
        [
            Column("line"),
            Column("time"),
            Column("group"),
            Column("tokens", right=True),
            Column("reason"),
            Column("details"),
        ],
        [
            [
                str(line.id),
                when(line.created_at, "-"),
                line.offer_group,
                signed(line.tokens),
                line.reason.value,
                _line_details(line),
            ]
            for line in lines
        ],
    )
    if next_before is not None:
        out.line(f"More lines may follow: --before {next_before}")
