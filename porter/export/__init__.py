"""Torch module -> ONNX file: export at the lowest workable opset, rewrite passes, simplify,
audit against a deployment compiler's operator table (Ascend ATC)."""
