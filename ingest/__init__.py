"""UBI clickstream from Kafka into OpenSearch: schema, validation, dead letters, idempotent writes."""
