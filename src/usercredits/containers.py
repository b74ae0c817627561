"""Dependency-injection wiring of the core (dependency-injector).

An empty :class:`UserCreditsContainer` works: in-memory storage and manual
payments. Backends plug in by overriding ``dao_factory`` and ``payment_client``
(see ``usercredits_mongo.containers`` and ``usercredits_stripe.containers``).
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from dependency_injector import containers, providers

from usercredits.clock import system_clock
from usercredits.dao import DaoFactory
from usercredits.manual import ManualPaymentClient
from usercredits.memory import InMemoryDaoFactory
from usercredits.payment import PaymentClient
from usercredits.service import PaymentService

T = TypeVar("T")


class ThreadSafeResource(providers.Resource[T]):
    """A resource (a backend's connection, closed by ``shutdown_resources()``) initialised once
    even when several threads ask for it at once; each container has its own lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._lock:
            provided: T = super()._provide(args, kwargs)  # type: ignore[misc]
            return provided


class UserCreditsContainer(containers.DeclarativeContainer):
    """The core's providers: ``config``, ``dao_factory``, ``payment_client``, ``clock``,
    ``service``.

    ``config.default_currency`` (default ``"usd"``) sets the service's currency. Every
    provider is safe to call from several threads at once: one service, one backend.
    """

    config = providers.Configuration(default={"default_currency": "usd"})

    dao_factory = providers.Dependency(
        instance_of=DaoFactory,  # type: ignore[type-abstract]
        default=providers.ThreadSafeSingleton(InMemoryDaoFactory),
    )

    payment_client = providers.Dependency(
        instance_of=PaymentClient,  # type: ignore[type-abstract]
        default=providers.ThreadSafeSingleton(ManualPaymentClient),
    )

    clock = providers.Object(system_clock)

    service = providers.ThreadSafeSingleton(
        PaymentService,
        dao_factory=dao_factory,
        payment_client=payment_client,
        default_currency=config.default_currency,
        clock=clock,
    )
