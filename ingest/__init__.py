"""UBI clickstream from Kafka into OpenSearch: schema, validation, dead letters, idempotent writes.

`IngestWorker` is the entry point; it takes ready-made clients (an OpenSearch client, a
kafka-python consumer and producer, optionally an admin client) and `IngestSettings`.
"""
