"""Running a model: text and image encoders on onnxruntime or OpenVINO, no torch.

`model_loader` turns a registered model directory into an encoder (the one place that picks the
class): a text model (`encoder`), a query model's pair (`encoder_pair`, sides named by
`input_type`) or a CLIP model (`clip_encoder`, `image_preprocess`). `runtime` and
`runtime_choice` pick the library that runs the graphs; `token_batches` cuts runs by padded
tokens, `batcher` gathers concurrent requests, and `slot` holds the encoder requests use now.
Imports `serving.models` below it, nothing above.
"""
