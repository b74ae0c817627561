"""The use cases behind :class:`~usercredits.service.PaymentService`, one module each.

- :mod:`.storefront` -- which offers a user may order;
- :mod:`.ordering` -- creating orders (and the selling rules) and their payment intents;
- :mod:`.settlement` -- applying a payment's outcome (the commit of a payment);
- :mod:`.effects` -- what an order's status implies (grants, child orders, windows,
  revocations), applied idempotently after each commit and completed by any retry;
- :mod:`.consumption` -- recording and checking consumption, reading balances;
- :mod:`.granting` -- grants made without an order, voids, the list of grants;
- :mod:`.holds` -- holding tokens before a job, capturing and releasing them;
- :mod:`.expiry` -- the expiry routine;
- :mod:`.refunds` -- refunds (full and partial), disputes and gateway events;
- :mod:`.upkeep` -- ``reconcile`` and ``audit``;
- :mod:`.views` -- what users read: credits, subscriptions, history, received events;
- :mod:`.checks` and :mod:`.context` -- argument checks, and what every use case works with.
"""
