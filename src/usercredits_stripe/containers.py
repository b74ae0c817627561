"""Dependency-injection wiring of the Stripe payment client (dependency-injector).

Compose it with the core's container by handing its ``payment_client`` over::

    stripe_container = StripeContainer()
    stripe_container.config.from_dict({"api_key": "sk_...", "webhook_secret": "whsec_..."})
    core = UserCreditsContainer(payment_client=stripe_container.payment_client)
"""

from __future__ import annotations

from dependency_injector import containers, providers

from usercredits_stripe.client import StripePaymentClient


class StripeContainer(containers.DeclarativeContainer):
    """Provides ``payment_client``, one :class:`StripePaymentClient` (a singleton) built from
    ``config.api_key`` and ``config.webhook_secret`` (required) and ``config.api_base``
    (optional: another Stripe-compatible server)."""

    config = providers.Configuration()

    payment_client = providers.Singleton(
        StripePaymentClient,
        api_key=config.api_key.required(),
        webhook_secret=config.webhook_secret.required(),
        api_base=config.api_base,
    )
