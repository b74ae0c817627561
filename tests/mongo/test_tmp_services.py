import uuid
from usercredits.testing.service_contracts import *  # noqa
from usercredits.testing import service_contracts as sc
from usercredits_mongo import MongoDaoFactory


class ThrowawayMongoDaoFactory(MongoDaoFactory):
    def close(self) -> None:
        try:
            self.database.client.drop_database(self.database.name)
        finally:
            super().close()


class MongoBackend:
    def make_dao_factory(self):
        return ThrowawayMongoDaoFactory.from_uri("mongomock://localhost", f"t_{uuid.uuid4().hex}")

for _name in sc.__all__:
    _c = getattr(sc, _name)
    if any(n.startswith("test_") for n in dir(_c)):
        globals()[f"TestTmp{_name}"] = type(f"TestTmp{_name}", (MongoBackend, _c), {})

from usercredits.testing.faults import FaultInjectionContract


class TestTmpFaults(MongoBackend, FaultInjectionContract):
    pass
