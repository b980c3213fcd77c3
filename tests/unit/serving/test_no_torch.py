from __future__ import annotations

import subprocess
import sys


def test_serving_imports_without_loading_torch() -> None:
    """Serving replicas run on onnxruntime alone: importing every module must not pull torch."""
    code = (
        "import sys, serving.api.app, serving.index.indexer, serving.models.registry,"
        " serving.state.query_log;"
        "heavy = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
