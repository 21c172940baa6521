"""The model clients: the backend seam (Triton, or ONNX Runtime in-process), the embedder and the tagger
over it, tokenizers and packed sequences."""
