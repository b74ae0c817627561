"""The container of the example applications, built from the environment.

- ``USERCREDITS_DB``: the database URL, as for the command line: ``memory://`` (the default:
  nothing is kept), ``sqlite:///credits.db``, ``postgresql://user@host/shop`` (the ``sql``
  extra), ``mongodb://host/shop`` or ``mongomock://localhost/shop`` (the ``mongo`` extra).
- ``STRIPE_API_KEY`` and ``STRIPE_WEBHOOK_SECRET`` (and optionally ``STRIPE_API_BASE``):
  payments through Stripe (the ``stripe`` extra); without them, the manual payment client.

Nothing is opened here: the database is opened when the application first asks for the
service, and closed by the container's ``shutdown_resources()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from usercredits.containers import UserCreditsContainer

MONGO_SCHEMES = ("mongodb", "mongodb+srv", "mongomock")


def container_from_env(environ: Mapping[str, str] = os.environ) -> UserCreditsContainer:
    """A container on the database of ``USERCREDITS_DB`` with the payment client of the
    ``STRIPE_*`` variables (see the module's documentation)."""
    container = UserCreditsContainer()
    url = environ.get("USERCREDITS_DB") or "memory://"
    scheme = url.partition("://")[0]
    if scheme in MONGO_SCHEMES:
        from usercredits_mongo.containers import MongoContainer

        mongo = MongoContainer(config={"uri": url})
        container.dao_factory.override(mongo.dao_factory)
    elif scheme != "memory":
        from usercredits_sql.containers import SqlContainer

        sql = SqlContainer(config={"url": url})
        container.dao_factory.override(sql.dao_factory)
    if environ.get("STRIPE_API_KEY"):
        from usercredits_stripe.containers import StripeContainer

        stripe = StripeContainer(
            config={
                "api_key": environ["STRIPE_API_KEY"],
                "webhook_secret": environ.get("STRIPE_WEBHOOK_SECRET"),
                "api_base": environ.get("STRIPE_API_BASE"),
            },
            dao_factory=container.dao_factory,
        )
        container.payment_client.override(stripe.payment_client)
    return container
