"""Model side: tiny/real presets of the two architectures, ONNX export with
parity checks, the Triton model repository and the local Triton launcher.

Knows models and Triton, never Kafka.
"""
