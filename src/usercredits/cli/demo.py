"""The WonderAI story: the library at work on the example catalogue, for three users.

Time is a :class:`~usercredits.clock.FrozenClock` starting at :data:`DEMO_START`, so
the story prints the same facts on every run and every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from usercredits.catalog import import_catalog, read_catalog
from usercredits.cli.commands import render_expiry, wonderai_catalog_file
from usercredits.cli.expiry import expire_all
from usercredits.cli.output import Column, Output, day, money, tokens, when
from usercredits.clock import FrozenClock
from usercredits.errors import InsufficientCreditsError
from usercredits.manual import ManualPaymentClient
from usercredits.models import Offer, Order
from usercredits.service import PaymentService

DEMO_START = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)
"""When the story starts (the FrozenClock's first reading)."""

USERS = ("alice", "bob", "carol")
TOKENS = "ai-tokens"


class WonderAIDemo:
    """Plays the WonderAI story on a service built with ``client`` and ``clock``."""

    def __init__(
        self,
        service: PaymentService,
        client: ManualPaymentClient,
        clock: FrozenClock,
        out: Output,
    ) -> None:
        self.service = service
        self.client = client
        self.clock = clock
        self.out = out
        self.offers = service.get_dao_factory().get_offer_dao()
        self.orders = service.get_dao_factory().get_order_dao()

    # -- helpers -----------------------------------------------------------------------

    def offer(self, key: str) -> Offer:
        offer = self.offers.find_by_key(key)
        if offer is None:
            raise LookupError(f"the WonderAI catalogue has no offer {key!r}")
        return offer

    def key_of(self, offer_id: object) -> str:
        offer = self.offers.find_by_id(offer_id)
        return "?" if offer is None else offer.key or offer.name

    def tokens_of(self, offer: Offer) -> int:
        """The AI tokens one unit of ``offer`` grants, its bundle items included."""
        total = offer.token_count or 0
        for item in offer.combined_items:
            item_offer = self.offers.find_by_id(item.offer_id)
            if item_offer is not None and item.offer_group == TOKENS:
                total += (item_offer.token_count or 0) * item.quantity
        return total

    def balance(self, user: str) -> str:
        return tokens(self.service.remaining_tokens(user, TOKENS))

    def offers_table(
        self, title: str, offers: Sequence[Offer], notes: dict[str, str] | None = None
    ) -> None:
        """The offers, then one line per offer with a note (marked ``*`` in the table)."""
        notes = notes or {}
        self.out.table(
            title,
            [
                Column("key"),
                Column("group"),
                Column("cycle"),
                Column("price", right=True),
                Column("AI tokens", right=True),
            ],
            [
                [
                    (o.key or o.name) + (" *" if o.key in notes else ""),
                    o.offer_group,
                    str(o.cycle),
                    money(o.price, o.currency),
                    tokens(self.tokens_of(o)) if self.tokens_of(o) else "-",
                ]
                for o in offers
            ],
        )
        for offer in offers:
            if offer.key in notes:
                self.out.line(f"  * {offer.key}: {notes[offer.key]}")

    def unlocked_notes(self, offers: Sequence[Offer]) -> dict[str, str]:
        """Why each offer a user sees is not in the anonymous storefront."""
        regular = self.service.load_offers()
        regular_keys = {o.key for o in regular}
        by_overriding = {o.overriding_key: o for o in regular if o.overriding_key}
        notes: dict[str, str] = {}
        for offer in offers:
            if offer.key in regular_keys or offer.key is None:
                continue
            replaced = by_overriding.get(offer.overriding_key or "")
            notes[offer.key] = (
                f"unlocked by {', '.join(offer.unlocked_by)}"
                if replaced is None
                else f"unlocked, replaces {replaced.key} (weight {offer.weight})"
            )
        return notes

    def pay(self, order: Order, *, decline: str | None = None) -> Order:
        """The operator's decision on the order's intent, then the settlement."""
        if decline is None:
            self.client.approve(order.id)
        else:
            self.client.decline(order.id, decline)
        self.service.after_execute(order)
        settled = self.orders.find_by_id(order.id)
        assert settled is not None
        return settled

    def grant_line(self, order: Order) -> str:
        children = self.orders.find({"parent_id": order.id})
        granted = [o for o in [order, *children] if o.token_count]
        parts = [f"{tokens(o.token_count)} AI tokens until {when(o.expires)}" for o in granted]
        return ", ".join(parts) if parts else "no tokens"

    # -- the story ---------------------------------------------------------------------

    def run(self) -> None:
        self.catalogue()
        self.alice_free_plan()
        self.bob_business_plan()
        self.carol_scaleup_plan()
        self.bob_bundle_and_pack()
        self.consumption()
        self.promotions_and_holds()
        self.warnings()
        self.expiry()
        self.final_state()

    def catalogue(self) -> None:
        out = self.out
        out.heading(f"1. The WonderAI catalogue ({when(self.clock())} UTC)")
        result = import_catalog(self.offers, read_catalog(wonderai_catalog_file()))
        out.line(
            f"Imported {len(result.created)} offers from wonderai.yaml "
            "(`usercredits catalog example` prints it)."
        )
        anonymous = self.service.load_offers()
        self.offers_table("Offers for an anonymous visitor", anonymous)
        early = self.service.load_offers(env_tags=["early-bird"])
        out.line(
            f"With env_tags=['early-bird'] the storefront shows {len(early)} offers: "
            + ", ".join(o.key or o.name for o in early)
            + "."
        )
        hidden = [o for o in self.offers.find({}) if o.unlocked_by]
        out.line(
            f"{len(hidden)} VIP offers stay hidden until a Business or ScaleUp plan is live: "
            + ", ".join(o.key or o.name for o in hidden)
            + "."
        )

    def alice_free_plan(self) -> None:
        out = self.out
        out.heading("2. Alice takes the Free plan")
        order = self.service.create_order(self.offer("free").id, "alice")
        out.line(
            f"Alice orders Free: the total is {money(order.total, order.currency)}, so the order "
            f"is {order.status} at once ({order.history[-1].message})."
        )
        out.line(f"Alice gets {self.grant_line(order)}.")

    def bob_business_plan(self) -> None:
        out = self.out
        out.heading("3. Bob subscribes to Business monthly, paid through the manual client")
        order = self.service.create_order(self.offer("business-monthly").id, "bob")
        out.line(
            f"Bob orders Business monthly: {order.status}, {money(order.total, order.currency)}; "
            "a payment intent is created and its secret goes to the browser."
        )
        self.service.after_execute(order)
        waiting = self.orders.find_by_id(order.id)
        assert waiting is not None
        out.line(
            f"Settled before the operator decides: still {waiting.status} "
            f"({waiting.history[-1].message})."
        )
        paid = self.pay(order)
        out.line(
            f"The operator approves the payment: {paid.status}. Bob gets {self.grant_line(paid)}."
        )
        offers = self.service.load_offers("bob")
        self.offers_table(
            "Offers for Bob now (his live Business plan unlocks the VIP offers)",
            offers,
            self.unlocked_notes(offers),
        )

    def carol_scaleup_plan(self) -> None:
        out = self.out
        out.heading("4. Carol buys ScaleUp yearly (early bird): declined, then paid")
        order = self.service.create_order(self.offer("scaleup-yearly-early-bird").id, "carol")
        refused = self.pay(order, decline="Card declined by the bank")
        out.line(
            f"Carol's first payment of {money(order.total, order.currency)}: {refused.status} "
            f"({refused.history[-1].message}); no tokens granted "
            f"(balance {self.balance('carol')})."
        )
        retry = self.service.pay_order(order.id)
        paid = self.pay(retry)
        out.line(
            f"She pays again with a new intent ({retry.status}), the operator approves: "
            f"{paid.status}. Carol gets {self.grant_line(paid)}."
        )
        offers = self.service.load_offers("carol")
        notes = self.unlocked_notes(offers)
        self.offers_table(
            "Offers unlocked for Carol",
            [o for o in offers if o.key in notes],
            notes,
        )
        out.line(
            "Both VIP packs share the overriding key pack-10k and are unlocked for Carol: "
            "scaleup-tokens-10k wins with weight 20 over vip-tokens-10k's 10."
        )

    def bob_bundle_and_pack(self) -> None:
        out = self.out
        self.clock.advance(days=5)
        out.heading(f"5. Bob buys the VIP Growth bundle and a token pack ({when(self.clock())})")
        bundle = self.pay(self.service.create_order(self.offer("vip-growth").id, "bob"))
        out.line(
            f"VIP Growth bundle ({money(bundle.total, bundle.currency)}): {bundle.status}; "
            "its items become child orders:"
        )
        for child in self.orders.find({"parent_id": bundle.id}):
            out.line(
                f"  - {self.key_of(child.offer_id)} to {child.offer_group}: "
                f"{tokens(child.token_count)} tokens, until {when(child.expires)}"
            )
        pack = self.pay(self.service.create_order(self.offer("tokens-2k").id, "bob"))
        out.line(
            f"2,000 AI tokens pack ({money(pack.total, pack.currency)}): {pack.status}; "
            f"these never expire. Bob's balance: {self.balance('bob')} AI tokens."
        )

    def consumption(self) -> None:
        out = self.out
        service = self.service
        self.clock.advance(days=5)
        out.heading(f"6. Tokens consumed ({when(self.clock())})")
        service.tokens_consumed("alice", TOKENS, 350)
        out.line(f"Alice uses 350 tokens: {self.balance('alice')} left.")
        try:
            service.consume_tokens("alice", TOKENS, 300)
        except InsufficientCreditsError as e:
            out.line(
                f"Alice asks for 300 more with consume_tokens: refused ({e}); "
                f"balance still {self.balance('alice')}."
            )
        first = service.consume_tokens("bob", TOKENS, 8000, idempotency_key="bob-report-42")
        out.line(
            f"Bob uses 8,000 tokens (idempotency key bob-report-42): {self.balance('bob')} left."
        )
        again = service.consume_tokens("bob", TOKENS, 8000, idempotency_key="bob-report-42")
        same = "the same ledger line" if service.equals(first.id, again.id) else "a NEW line"
        out.line(
            f"The request is retried with the same key: {same}, nothing more consumed: "
            f"{self.balance('bob')} left."
        )
        service.tokens_consumed("carol", TOKENS, 45000)
        out.line(f"Carol uses 45,000 tokens: {self.balance('carol')} left.")
        self.grants_table("Bob's grants: consumption draws from the one expiring soonest", "bob")

    def grants_table(self, title: str, user: str) -> None:
        """The user's live AI-token grants, in the order consumption draws them."""
        rows = []
        for grant in self.service.grants(user, TOKENS):
            name = grant.source.value if grant.order_id is None else self.order_key(grant.order_id)
            rows.append(
                [
                    name,
                    str(grant.priority),
                    when(grant.expires),
                    tokens(grant.tokens),
                    tokens(grant.remaining),
                ]
            )
        self.out.table(
            title,
            [
                Column("grant"),
                Column("priority", right=True),
                Column("expires"),
                Column("granted", right=True),
                Column("still held", right=True),
            ],
            rows,
        )

    def order_key(self, order_id: object) -> str:
        order = self.orders.find_by_id(order_id)
        return "?" if order is None else self.key_of(order.offer_id)

    def promotions_and_holds(self) -> None:
        out = self.out
        service = self.service
        self.clock.advance(days=1)
        out.heading(f"7. A promotion, a long job and a mistake ({when(self.clock())})")
        service.grant_tokens(
            "alice",
            TOKENS,
            300,
            expires=datetime(2025, 2, 14, 9, 0, tzinfo=UTC),
            priority=10,
            idempotency_key="winter-2025",
            note="Winter promotion",
        )
        out.line(
            "Alice gets a winter promotion: 300 AI tokens until 2025-02-14, priority 10 "
            f"(drawn before her plan's tokens): {self.balance('alice')} tokens."
        )
        service.tokens_consumed("alice", TOKENS, 100)
        self.grants_table("Alice uses 100 tokens: the promotion's burn first", "alice")
        hold = service.reserve("carol", TOKENS, 5000, ttl=timedelta(minutes=30))
        out.line(
            f"Carol starts a video job and reserves 5,000 tokens: balance {self.balance('carol')}, "
            f"available {tokens(service.available_tokens('carol', TOKENS))}."
        )
        line = service.capture(hold.id, 3200)
        out.line(
            f"The job used {tokens(-line.tokens)} tokens: the hold is captured for that and the "
            f"rest freed. Balance {self.balance('carol')}, available "
            f"{tokens(service.available_tokens('carol', TOKENS))}."
        )
        grant = service.grant_tokens("bob", TOKENS, 1000, note="goodwill, wrong user")
        out.line(f"An operator credits Bob 1,000 tokens by mistake: {self.balance('bob')}.")
        service.void_grant(grant.id)
        out.line(f"The grant is voided: {self.balance('bob')} again.")

    def warnings(self) -> None:
        self.clock.set(datetime(2025, 2, 10, 9, 0, tzinfo=UTC))
        self.out.heading(f"8. Expiry warnings ({when(self.clock())})")
        self.out.line("The cron job runs: usercredits expire --warn-days 7 --low ai-tokens=1000")
        summary = expire_all(self.service, warn_before=timedelta(days=7), low={TOKENS: 1000})
        render_expiry(self.out, summary)

    def expiry(self) -> None:
        out = self.out
        self.clock.set(datetime(2025, 2, 16, 9, 0, tzinfo=UTC))
        out.heading(f"9. The monthly plans have ended ({when(self.clock())})")
        out.line("The cron job runs again: usercredits expire")
        summary = expire_all(self.service)
        render_expiry(out, summary)
        again = expire_all(self.service)
        out.line(
            f"A second run changes nothing: {again.orders_expired} orders expired, "
            f"{sum(again.removed_tokens.values())} tokens removed."
        )
        unlocked = self.unlocked_notes(self.service.load_offers("bob"))
        out.line(
            f"Offers unlocked for Bob now: {len(unlocked)} (his Business plan has ended); "
            f"Carol still has {len(self.unlocked_notes(self.service.load_offers('carol')))}."
        )

    def final_state(self) -> None:
        out = self.out
        out.heading("10. Where everyone stands")
        rows = []
        for user in USERS:
            credits = self.service.load_user_credits(user)
            groups = credits.offers if credits is not None else []
            if not groups:
                rows.append([user, "(none)", "0", "-"])
            rows += [[user, g.offer_group, tokens(g.tokens), when(g.expires)] for g in groups]
        out.table(
            "Balances",
            [Column("user"), Column("group"), Column("tokens", right=True), Column("expires")],
            rows,
        )
        order_rows = []
        for user in USERS:
            for order in self.orders.find({"user_id": user}):
                order_rows.append(
                    [
                        user,
                        self.key_of(order.offer_id) + (" (item)" if order.parent_id else ""),
                        str(order.status),
                        "-" if order.parent_id else money(order.total, order.currency),
                        tokens(order.token_count),
                        day(order.expires),
                    ]
                )
        out.table(
            "Orders (bundle items are child orders)",
            [
                Column("user"),
                Column("offer"),
                Column("status"),
                Column("total", right=True),
                Column("tokens", right=True),
                Column("expires"),
            ],
            order_rows,
        )


def run_demo(
    service: PaymentService, client: ManualPaymentClient, clock: FrozenClock, out: Output
) -> None:
    """Play the WonderAI story on an empty backend."""
    WonderAIDemo(service, client, clock, out).run()
