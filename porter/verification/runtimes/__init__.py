"""Source runtimes (onnxruntime, TensorFlow, Paddle) and the torch side, as parity runners."""
