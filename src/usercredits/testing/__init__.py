"""The contract test suite every storage backend must pass (requires pytest).

Subclass each contract class once per backend and implement ``make_dao_factory``
to return a fresh, empty backend::

    class TestMyOfferDao(OfferDaoContract):
        def make_dao_factory(self) -> DaoFactory:
            return MyDaoFactory(...)
"""
