"""The document index in OpenSearch: versioned k-NN indexes behind one alias, and moving them.

`vector_index` (the index seam) and `index_versions` (which index belongs to which model and
receives writes); building one from a corpus (`corpus`, `indexer`, with images through
`doc_images` and `image_fetch`); re-embedding the live one with another model (`reindex`,
`reindex_pages`, and on Ray `reindex_slices`, `reindex_ray`, `ray_cluster`); hybrid BM25 + k-NN
search (`hybrid`); OpenSearch calling clicktune through ml-commons (`ml_commons`).
Imports `serving.encoders` and `serving.models` below it, nothing above.
"""
