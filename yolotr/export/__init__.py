"""Deployment formats: ONNX (optionally ending in NMS), TorchScript, OpenVINO and TensorRT, each checked against the
PyTorch model on the same images and timed (`exporter.export`; `yolotr export` is `export_cli`)."""
