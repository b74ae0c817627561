"""The contract test suite every storage backend must pass (requires pytest).

Subclass each contract class once per backend and implement ``make_dao_factory``
to return a fresh, empty backend::

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
        f"{__name__}.base", f"{__name__}.dao_contracts", f"{__name__}.service_contracts"
    )
