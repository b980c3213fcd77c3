"""A tiny random sentence-transformers encoder whose words are told apart (for query-side tests).

`tests.integration.worker_support.build_tiny_st_model` passes `vocab_file=`, which
transformers 5 ignores: its tokenizer reads every word as [UNK], so all texts of one length
embed alike. A query adapter learns nothing from such an encoder; this one passes `vocab=`.
"""

from __future__ import annotations

import re
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_encoder(path: Path, texts: list[str], dimension: int = 32) -> Path:
    """Save a 2-layer BERT sentence-transformers model whose vocabulary covers `texts`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel
    from transformers.models.bert import BertTokenizer

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    raw = path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + words)})
    config = BertConfig(
        vocab_size=len(SPECIAL) + len(words),
        hidden_size=dimension,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * dimension,
        max_position_embeddings=128,
        initializer_range=0.5,  # BERT's 0.02 leaves a random model's sentences nearly parallel
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(dimension, "mean")])
    target = path / "st-model"
    model.save(str(target))
    return target
