"""Testing tools: the contract suite every storage backend must pass, and fakes.

- :mod:`usercredits.testing.dao_contracts`: one contract class per DAO interface;
- :mod:`usercredits.testing.service_contracts`: the service's rules, run on a backend;
- :mod:`usercredits.testing.credits_contracts`: the credits API (grants, holds, history);
- :mod:`usercredits.testing.faults`: the fault-injection suite, every writing call failing
  at each of its writes in turn, then retried;
- :mod:`usercredits.testing.fakes`: ``FakePaymentClient``, a scripted payment gateway.

The contract classes need pytest. Subclass each one once per backend and implement
``make_dao_factory`` to return a fresh, empty backend::

    from usercredits.testing.dao_contracts import OfferDaoContract

    class TestMyOfferDao(OfferDaoContract):
        def make_dao_factory(self) -> DaoFactory:
            return MyDaoFactory(...)
"""

try:
    import pytest
except ImportError:  # the fakes work without pytest; only the contract classes need it
    pass
else:
    # Contract failures then show the compared values, as in a backend's own test files.
    pytest.register_assert_rewrite(
        f"{__name__}.base",
        f"{__name__}.dao_contracts",
        f"{__name__}.service_contracts",
        f"{__name__}.credits_contracts",
        f"{__name__}.faults",
    )
