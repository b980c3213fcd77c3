"""What a model is and where its versions live (the bottom of serving).

The model directory contract (`model_dir`) and its sha256 manifest (`model_manifest`), the
registry seam (`registries`) with its two backends, a local folder (`registry`) and MLflow
(`mlflow_registry` over `mlflow_rest`), and a replica's checked local copies (`model_cache`).
Imports nothing else of serving but `serving.errors`.
"""
