"""Tokenizers behind one small interface.

The tiny presets use a byte-level tokenizer (ids 0..255 are UTF-8 bytes, then
specials), which is a real, lossless tokenizer that fits their 512-token vocab.
Real checkpoints ship a Hugging Face tokenizer, loaded from the checkpoint dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    eos: int
    vision_start: int
    vision_end: int
    image_pad: int


class Tokenizer(Protocol):
    special: SpecialTokens

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    def __init__(self, special: SpecialTokens) -> None:
        self.special = special

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class HFTokenizer:
    """A checkpoint's own tokenizer (real Qwen models); loaded offline from disk."""

    def __init__(self, path: Path, special: SpecialTokens) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.special = special

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))


def load_tokenizer(kind: str, special: SpecialTokens, path: Path | None = None) -> Tokenizer:
    if kind == "bytes":
        return ByteTokenizer(special)
    if kind == "hf" and path is not None:
        return HFTokenizer(path, special)
    raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'bytes', or 'hf' with a path)")
