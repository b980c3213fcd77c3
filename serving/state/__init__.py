"""What outlives a request, kept outside the replica (beside `serving.models` at the bottom).

Fine-tuning tasks in OpenSearch (`tasks`), the UBI query records `/v1/search` publishes
(`query_log`) through Kafka (`lazy_kafka`) or, while Kafka is down, a local spool (`spool`), and
the daemon loop the replica's followers and reporters run on (`background`). Imports nothing else
of serving but `serving.config` and `serving.errors`.
"""
