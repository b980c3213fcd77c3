"""The data plane: ONNX encoders, model slots, document indexes and the HTTP API (no torch)."""
