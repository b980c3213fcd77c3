"""Helpers of the rollout tests: slow and versioned fake encoders, and a reindex process to kill.

Run as a script (`python rollout_support.py URL PREFIX HOME VERSION DELAY [INDEX]`) it resumes or
starts a reindex of the index behind alias PREFIX with a hashing encoder, DELAY s per batch; its
checkpoint is a file under HOME, or with INDEX a document of that OpenSearch index.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from serving.encoders.encoder import DelegatingEncoder, HashingEncoder

DIMENSIONS = {"v1": 32, "v2": 48, "v3": 40}


class SlowEncoder(DelegatingEncoder):
    """A hashing encoder that sleeps `delay_s` per call, so a reindex takes a while."""

    def __init__(self, version: str, delay_s: float) -> None:
        super().__init__(HashingEncoder(DIMENSIONS[version], version))
        self.delay_s = delay_s

    def encode(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.encode(texts)


def encoder_for(version: str) -> HashingEncoder:
    return HashingEncoder(DIMENSIONS[version], version)


def main(argv: list[str]) -> int:
    from opensearchpy import OpenSearch

    from serving.config import IndexSettings
    from serving.index.reindex import Reindexer
    from serving.index.reindex_checkpoints import CheckpointStores, OpenSearchCheckpointStore
    from serving.index.vector_index import DocumentIndex
    from serving.state.documents import OpenSearchDocuments

    url, prefix, home, version, delay, *index = argv
    settings = IndexSettings(alias=prefix, prefix=prefix, bulk_batch_size=50)
    doc_index = DocumentIndex(OpenSearch(hosts=[url], timeout=30), settings)
    encoder = SlowEncoder(version, float(delay))
    checkpoints: Path | CheckpointStores = Path(home)
    if index:
        documents = OpenSearchDocuments(doc_index.client, index[0], replicas=0)
        checkpoints = lambda alias: OpenSearchCheckpointStore(documents, alias)  # noqa: E731
    reindexer = Reindexer(doc_index, encoder, checkpoints, batch_size=50, progress=False)
    report = reindexer.run(resume=True)
    print(report.index, report.docs, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
