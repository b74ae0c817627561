"""The storefront: which offers a user may order now."""

from __future__ import annotations

import logging
from collections.abc import Collection

from usercredits.errors import InvalidInputError
from usercredits.models import Offer, UserId
from usercredits.usecases.context import Context
from usercredits.usecases.views import active_groups

logger = logging.getLogger("usercredits")


def load_offers(
    ctx: Context, user_id: UserId = None, env_tags: Collection[str] | None = None
) -> list[Offer]:
    """Regular offers (with every tag of ``env_tags``), where offers unlocked by the user's live
    paid orders replace the regular offer sharing their ``overriding_key`` (highest
    ``weight`` first, then smallest id)."""
    if isinstance(env_tags, str):
        raise InvalidInputError("env_tags must be a list of tags, not a str")
    regular = ctx.offers.find_regular(env_tags)
    if user_id is None:
        return regular
    groups = active_groups(ctx, user_id, ctx.now())
    if not groups:
        return regular
    candidates: dict[str, list[Offer]] = {}
    unkeyed: list[Offer] = []
    for offer in ctx.offers.find_unlocked_by(groups):
        if offer.overriding_key is None:
            unkeyed.append(offer)
        else:
            candidates.setdefault(offer.overriding_key, []).append(offer)
    winners = {key: _best_unlocked(key, offers) for key, offers in candidates.items()}
    result: list[Offer] = []
    placed: set[str] = set()
    for offer in regular:
        key = offer.overriding_key
        if key is not None and key in winners:
            if key not in placed:
                result.append(winners[key])
                placed.add(key)
            continue
        result.append(offer)
    result.extend(o for k, o in winners.items() if k not in placed)
    result.extend(unkeyed)
    return result


def _best_unlocked(key: str, offers: list[Offer]) -> Offer:
    """The unlocked offer that wins ``key``: highest weight, then smallest ``str(id)``."""
    ranked = sorted(offers, key=lambda o: (-o.weight, str(o.id)))
    tied = [o for o in ranked if o.weight == ranked[0].weight]
    if len(tied) > 1:
        logger.warning(
            "offers %s unlock the same overriding key %r with the same weight %d; %r wins",
            ", ".join(repr(str(o.id)) for o in tied),
            key,
            ranked[0].weight,
            str(ranked[0].id),
        )
    return ranked[0]
