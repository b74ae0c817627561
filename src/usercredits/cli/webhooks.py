"""Gateway events: the ones received, and replaying one."""

from __future__ import annotations

import json

import click

from usercredits.cli.backend import backend_options, service_for
from usercredits.cli.output import Column, output_for, when
from usercredits.usecases.views import MAX_HISTORY


@click.group(short_help="List or replay the gateway events received.")
def webhooks() -> None:
    """The gateway events received by the webhook endpoint, each stored once by its id."""


@webhooks.command("list")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_HISTORY),
    default=50,
    show_default=True,
    metavar="N",
    help=f"At most N events (1 to {MAX_HISTORY}).",
)
@click.option("--before", metavar="EVENT_ID", help="Only events received before this one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@backend_options
@click.pass_context
def list_command(
    ctx: click.Context,
    limit: int,
    before: str | None,
    as_json: bool,
    db: str | None,
    mongo_uri: str | None,
) -> None:
    """List the events received, the last first: id, type, when, the order it concerned and
    what was done."""
    out = output_for(ctx)
    events = service_for(ctx, db, mongo_uri).webhook_events(limit=limit, before=before)
    if as_json:
        document = {
            "events": [e.to_dict() for e in events],
            "next_before": events[-1].id if len(events) == limit else None,
        }
        click.echo(json.dumps(document, indent=2))
        return
    if not events:
        out.line("No gateway event received" + ("" if before is None else f" before {before}."))
        return
    out.table(
        "Gateway events, the last received first",
        [
            Column("event"),
            Column("type"),
            Column("received"),
            Column("order"),
            Column("handled"),
            Column("what was done"),
        ],
        [
            [
                e.id,
                e.type,
                when(e.received_at, "-"),
                "-" if e.order_id is None else str(e.order_id),
                "yes" if e.handled else "no",
                e.message,
            ]
            for e in events
        ],
    )
    if len(events) == limit:
        out.line(f"More with --before {events[-1].id}.")


@webhooks.command("replay")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@backend_options
@click.pass_context
def replay_command(
    ctx: click.Context, event_id: str, as_json: bool, db: str | None, mongo_uri: str | None
) -> None:
    """Apply the stored event EVENT_ID again (after a fix, or when its processing was
    interrupted). Idempotent: what the event did already is not done twice. The payment client
    that received the event must be able to read it again (the application's container, when
    the commands are embedded in it)."""
    result = service_for(ctx, db, mongo_uri).replay_webhook(event_id)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    order = "" if result.order is None else f" (order {result.order.id}: {result.order.status})"
    if result.duplicate:
        click.echo(f"Event {event_id} was applied already: nothing more done{order}.")
    elif result.handled:
        click.echo(f"Event {event_id} applied{order}.")
    else:
        click.echo(f"Event {event_id}: {result.message}{order}.")
