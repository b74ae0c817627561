"""Dependency-injection wiring of the Stripe payment client (dependency-injector).

Compose it with the core's container by handing its ``payment_client`` over, and the
application's ``dao_factory`` to it, where the client keeps its Stripe customers::

    mongo = MongoContainer(config={"uri": "mongodb://localhost:27017", "db": "shop"})
    payments = StripeContainer(
        config={"api_key": "sk_...", "webhook_secret": "whsec_..."},
        dao_factory=mongo.dao_factory,
    )
    core = UserCreditsContainer(
        dao_factory=mongo.dao_factory, payment_client=payments.payment_client
    )

Without a ``dao_factory`` the client has no customer store: payments, webhooks and refunds
work, ``ensure_customer`` and the balances raise PaymentError.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from usercredits.dao import CustomerDao, DaoFactory
from usercredits_stripe.client import StripePaymentClient


def customer_dao(dao_factory: DaoFactory | None) -> CustomerDao | None:
    """The customer DAO of ``dao_factory``, None without a factory; TypeError for anything
    else than a DaoFactory."""
    if dao_factory is None:
        return None
    if not isinstance(dao_factory, DaoFactory):
        raise TypeError(f"dao_factory must be a DaoFactory, got {type(dao_factory).__name__}")
    return dao_factory.get_customer_dao()


class StripeContainer(containers.DeclarativeContainer):
    """Provides ``payment_client``, one :class:`StripePaymentClient` (a singleton, safe to ask
    for from several threads at once) built from
    ``config.api_key`` and ``config.webhook_secret`` (required), ``config.api_base``
    (optional: another Stripe-compatible server) and the customer DAO of ``dao_factory``
    (optional: the application's :class:`~usercredits.dao.DaoFactory`, the same as the core
    container's)."""

    config = providers.Configuration()

    dao_factory: providers.Dependency[DaoFactory | None] = providers.Dependency(
        default=providers.Object(None)
    )
    """The application's DaoFactory, where Stripe customers are stored (None: none)."""

    payment_client = providers.ThreadSafeSingleton(
        StripePaymentClient,
        api_key=config.api_key.required(),
        webhook_secret=config.webhook_secret.required(),
        api_base=config.api_base,
        customers=providers.Callable(customer_dao, dao_factory),
    )
