"""The data plane: ONNX encoders, model slots, document indexes and the HTTP API (no torch).

Its subpackages are its planes, each importing only those below it (import-linter checks it):

    api       the HTTP API: search, embeddings, the UBI collector, documents, admin, dashboard
    rollout   A/B experiments, promote and rollback, hot swap, replicas following the live model
    index     versioned k-NN indexes behind an alias, indexing, reindex (local or Ray), hybrid
    encoders  running a model: text, pair and CLIP encoders, runtimes, batching, slots, loading
    models    what a model is and where versions live: directory contract, registry, cache
    state     what outlives a request: fine-tuning tasks, the UBI query log and its spool

`serving.config` (settings) and `serving.errors` (the exception tree) sit under all of them.
"""
