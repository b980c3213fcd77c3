"""The HTTP API of a serving replica: the top of serving, what clients and OpenSearch call.

`app` builds the FastAPI app: embeddings, ml-commons `/embed` and search (`api_models` validates
bodies, `api_errors` shapes every error). Beside it, each a router: the UBI collector
(`collector`, with signed `query_ids`), document writes (`documents`), the admin API (`admin`),
fine-tuning tasks (`task_api`) and the status page (`dashboard`, `dashboard_sources`,
`dashboard.html`). Every route declares its token scope (`auth`); bodies pass one size and depth
limit (`body_limits`), the collector a rate limit (`rate_limit`); `/metrics` is `metrics`.
May import every other part of serving; nothing in serving imports it.
"""
