"""The use cases behind :class:`~usercredits.service.PaymentService`, one module each.

- :mod:`.storefront` -- which offers a user may order;
- :mod:`.ordering` -- creating orders and their payment intents;
- :mod:`.settlement` -- applying a payment's outcome (the commit of a payment);
- :mod:`.effects` -- what an order's status implies (grants, child orders, windows,
  revocations), applied idempotently after each commit and completed by any retry;
- :mod:`.consumption` -- recording and checking consumption, reading balances;
- :mod:`.expiry` -- the expiry routine;
- :mod:`.refunds` -- refunds and gateway events;
- :mod:`.upkeep` -- ``reconcile`` and ``audit``.
"""
