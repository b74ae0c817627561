"""MongoDB backend of usercredits (mongoengine documents, pymongo atomic operations)."""
