"""Keep a projection's few outlier input channels in fp32 so the rest quantises cleanly.

Why: dynamic int8 quantises each MatMul input with one scale for the whole tensor. In
all-MiniLM-L6-v2 the [CLS] token carries a massive activation (about 28 in channel 99 of every
attention LayerNorm output, about 20 in one GELU channel per layer) while the median channel
peaks near 2, so one int8 step is as wide as a typical value and short texts, whose mean pooling
averages few tokens, bend most (min cosine 0.965 to fp32 with every projection int8).

The fix is LLM.int8()'s mixed-precision decomposition (Dettmers et al., 2022, arXiv:2208.07339):
for an input X of shape (..., K) whose calibration absmax in channel j exceeds `ratio` x the
median channel absmax, split

    X @ W = (X * inlier_mask) @ W  +  X[..., outliers] @ W[outliers, :]
            `--- int8 later ---'     `------- fp32, K_out << K -------'

The split graph is exact in fp32 (same vectors to ~1e-6); `tuner.quantize` then quantises only
the first MatMul, whose input range no longer includes the outliers. Consumers of one input
(query, key and value) share the mask and the gather.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

__all__ = ["split_outliers"]


def split_outliers(
    src: Path,
    dst: Path,
    nodes: Sequence[str],
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    ratio: float = 3.0,
    max_channels: int = 16,
) -> dict[str, list[int]]:
    """Write `src` with the outlier channels of `nodes`' inputs split off to `dst`.

    `calibration` holds ready input feeds (one dict per batch). Returns, per input tensor, the
    channels kept fp32 (empty lists included). The MatMul nodes keep their names, so the same
    `nodes` can be handed to the quantiser afterwards.
    """
    import onnx

    if ratio <= 1:
        raise ValueError(f"outlier ratio must be > 1 (x the median channel absmax); got {ratio}")
    model = onnx.load(str(src))
    wanted = set(nodes)
    by_input: dict[str, list[NodeProto]] = {}
    for node in model.graph.node:
        if node.name in wanted:
            by_input.setdefault(node.input[0], []).append(node)
    peaks = _channel_absmax(model, list(by_input), calibration)
    channels = {x: _outliers(peaks[x], ratio, max_channels) for x in by_input}
    before: dict[str, list[NodeProto]] = {}  # consumer name -> nodes to place ahead of it
    after: dict[str, list[NodeProto]] = {}  # consumer name -> nodes to place right behind it
    for x, consumers in by_input.items():
        if channels[x]:
            before[consumers[0].name] = _split_input(model.graph, x, consumers, channels[x])
            after.update(
                (c.name, _outlier_path(model.graph, c, f"{x}/outliers", channels[x]))
                for c in consumers
            )
    _reorder(model.graph, before, after)
    onnx.save(model, str(dst))
    return channels


def _reorder(
    graph: GraphProto, before: dict[str, list[NodeProto]], after: dict[str, list[NodeProto]]
) -> None:
    """Rebuild the node list once with the new nodes around their MatMuls (stays topological:
    the first consumer of an input comes before the others in the original order)."""
    nodes: list[NodeProto] = []
    for node in graph.node:
        nodes += [*before.get(node.name, []), node, *after.get(node.name, [])]
    del graph.node[:]
    graph.node.extend(nodes)


def _outliers(peak: np.ndarray, ratio: float, max_channels: int) -> list[int]:
    """Channels whose absmax exceeds `ratio` x the median channel's, largest first."""
    bound = ratio * float(np.median(peak))
    return [int(c) for c in np.argsort(-peak)[:max_channels] if peak[c] > bound]


def _channel_absmax(
    model: ModelProto, names: list[str], calibration: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |value| of the tensors `names` over all calibration batches."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = type(model)()
    probe.CopyFrom(model)
    del probe.graph.output[:]  # only the probed tensors: the embedding is not needed here
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for feeds in calibration:
        outputs = session.run(names, {k: v for k, v in feeds.items() if k in inputs})
        for name, value in zip(names, outputs, strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)  # (K,)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def _split_input(
    graph: GraphProto, x: str, consumers: list[NodeProto], channels: list[int]
) -> list[NodeProto]:
    """Point `consumers` (MatMuls reading `x`) at the inliers; return the mask and gather nodes."""
    from onnx import helper, numpy_helper

    weight = next(i for i in graph.initializer if i.name == consumers[0].input[1])
    mask = np.ones(weight.dims[0], dtype=np.float32)  # the weight is (K, N)
    mask[channels] = 0.0
    graph.initializer.extend(
        [
            numpy_helper.from_array(mask, f"{x}/inlier_mask"),
            numpy_helper.from_array(np.array(channels, dtype=np.int64), f"{x}/outlier_index"),
        ]
    )
    for consumer in consumers:
        consumer.input[0] = f"{x}/inliers"
    return [
        helper.make_node("Mul", [x, f"{x}/inlier_mask"], [f"{x}/inliers"], name=f"{x}/inliers"),
        helper.make_node(
            "Gather", [x, f"{x}/outlier_index"], [f"{x}/outliers"], name=f"{x}/outliers", axis=-1
        ),
    ]


def _outlier_path(
    graph: GraphProto, matmul: NodeProto, outliers: str, channels: list[int]
) -> list[NodeProto]:
    """The fp32 MatMul over the outlier rows of `matmul`'s weight, and the Add that sums both."""
    from onnx import helper, numpy_helper

    weight_name = matmul.input[1]
    weight = next(i for i in graph.initializer if i.name == weight_name)
    rows = numpy_helper.to_array(weight)[channels]  # (K_out, N)
    graph.initializer.append(numpy_helper.from_array(rows, f"{weight_name}/outlier_rows"))
    output = matmul.output[0]
    matmul.output[0] = f"{output}/inlier_part"
    return [
        helper.make_node(
            "MatMul",
            [outliers, f"{weight_name}/outlier_rows"],
            [f"{output}/outlier_part"],
            name=f"{matmul.name}/outlier_rows",
        ),
        helper.make_node(
            "Add",
            [f"{output}/inlier_part", f"{output}/outlier_part"],
            [output],
            name=f"{matmul.name}/sum",
        ),
    ]
