"""Changing what users get: A/B experiments, promotion and rollback, and replicas following it.

Experiments and sticky arms routing `/v1/search` (`ab`), team-draft interleaving (`interleave`),
result randomisation for off-policy learning (`randomize`), per-arm health shared across
replicas (`arm_health`) and the statistics that decide (`ab_stats`); promote and roll back the
production model with the document alias (`rollout`), a replica's checked hot swap (`hotswap`)
and how replicas learn the live model changed (`replicas`).
Imports `serving.index`, `serving.encoders`, `serving.models` and `serving.state`, nothing above.
"""
