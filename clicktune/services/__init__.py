"""The local OpenSearch and Kafka of `clicktune services`: fetched with Maven, run on loopback.

`manager` holds the verbs (`up`, `down`, `status`); `opensearch` and `kafka` know how to fetch,
install and start each server; `process` and `preflight` hold the checks around them.
"""
