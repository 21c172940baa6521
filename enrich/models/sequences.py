"""Token sequences, M-RoPE positions and attention segments for the text graphs.

A ``PackedSequence`` is one shared prefix (item content: text and image
placeholders) followed by zero or more suffixes. Each suffix sees the prefix
and itself, never the other suffixes, and its positions restart right after
the prefix, so one forward over a packed row equals one forward per suffix.
The embedder uses zero suffixes and marks its readouts inside the prefix (the
mICL compression tokens); the tagger reads the last token of each suffix.

Who attends to whom travels as one small integer per token, ``attn_segments``
(0: the prefix, j + 1: suffix j, -1: padding); the graph builds its mask from
it (``triton_models.graphs.segment_mask``): a token sees the prefix and its own
segment, causally in a decoder. Nothing quadratic in the sequence crosses the
wire (a dense float bias was 2 MB per tagger row at real size).

Every text-graph input is batch-first, with image embeddings padded per row,
so Triton's dynamic batcher can concatenate requests whose padded shapes match
(``bucket`` rounds the sequence and image-token lengths up for that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PADDING_SEGMENT = -1


@dataclass
class Prefix:
    """Item content as token ids with 3-D (t, h, w) M-RoPE positions."""

    ids: list[int] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)  # chunks of [3, n]
    next_pos: int = 0
    num_image_tokens: int = 0
    readouts: list[int] = field(default_factory=list)  # prefix positions whose hidden state is read out

    def add_text(self, ids: list[int]) -> None:
        if not ids:
            return
        self.ids.extend(ids)
        pos = np.arange(self.next_pos, self.next_pos + len(ids), dtype=np.int64)
        self.positions.append(np.broadcast_to(pos, (3, len(ids))))
        self.next_pos += len(ids)

    def add_image(self, grid: tuple[int, int, int], merge: int, image_pad: int) -> None:
        t, h, w = grid[0], grid[1] // merge, grid[2] // merge
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        pos = np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]).astype(np.int64) + self.next_pos
        self.ids.extend([image_pad] * pos.shape[1])
        self.positions.append(pos)
        self.num_image_tokens += pos.shape[1]
        self.next_pos += max(t, h, w)

    def add_visual_tokens(self, n: int, image_pad: int) -> None:
        """``n`` image-token slots at consecutive 1-D positions (an encoder's visual tokens)."""
        self.add_text([image_pad] * n)
        self.num_image_tokens += n

    def mark_readout(self) -> None:
        """Read the hidden state of the last token added so far."""
        if not self.ids:
            raise ValueError("nothing to read out: the prefix is empty")
        self.readouts.append(len(self.ids) - 1)

    def position_array(self) -> np.ndarray:
        if not self.positions:
            return np.zeros((3, 0), dtype=np.int64)
        return np.concatenate(self.positions, axis=1)


@dataclass
class PackedSequence:
    prefix: Prefix
    suffixes: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prefix.ids) + sum(len(s) for s in self.suffixes)

    @property
    def num_readouts(self) -> int:
        return len(self.suffixes) or len(self.prefix.readouts) or 1


def _round_up(n: int, bucket: int) -> int:
    return -(-n // bucket) * bucket


@dataclass(frozen=True)
class TextBatch:
    input_ids: np.ndarray  # [B, S] int64
    attn_segments: np.ndarray  # [B, S] int64: 0 prefix, j + 1 suffix j, -1 padding
    position_ids: np.ndarray  # [B, 3, S] int64
    readout_index: np.ndarray  # [B, R] int64
    readout_counts: list[int]
    segments: np.ndarray  # [B, S] int64: 1 on suffix tokens (an encoder's token types), else 0
    bucket: int = 1

    def as_inputs(self, image_embeds: list[np.ndarray], width: int) -> dict[str, np.ndarray]:
        """``image_embeds``: per row, its image tokens' embeddings in prompt order ([n_i, width])."""
        if len(image_embeds) != len(self.input_ids):
            raise ValueError(f"{len(image_embeds)} image embedding blocks for {len(self.input_ids)} rows")
        # At least one slot, so the graph's gather has something to index on text-only batches.
        t = _round_up(max([1] + [len(e) for e in image_embeds]), self.bucket)
        padded = np.zeros((len(image_embeds), t, width), np.float32)
        for row, e in enumerate(image_embeds):
            padded[row, : len(e)] = e
        return {
            "input_ids": self.input_ids,
            "attn_segments": self.attn_segments,
            "position_ids": self.position_ids,
            "image_embeds": padded,
            "readout_index": self.readout_index,
        }


def build_text_batch(seqs: list[PackedSequence], pad_id: int, bucket: int = 1) -> TextBatch:
    """Right-pad packed sequences into one text-graph call, to a multiple of ``bucket`` tokens.

    Readouts: the prefix's marked readouts (else its last token) when there are
    no suffixes, else the last token of each suffix.
    """
    b = len(seqs)
    s = _round_up(max(len(q) for q in seqs), bucket)
    r = max(q.num_readouts for q in seqs)
    ids = np.full((b, s), pad_id, dtype=np.int64)
    pos = np.zeros((b, 3, s), dtype=np.int64)
    attn = np.full((b, s), PADDING_SEGMENT, dtype=np.int64)
    readout = np.zeros((b, r), dtype=np.int64)
    segments = np.zeros((b, s), dtype=np.int64)
    counts = []
    for row, q in enumerate(seqs):
        p = len(q.prefix.ids)
        ids[row, :p] = q.prefix.ids
        pos[row, :, :p] = q.prefix.position_array()
        attn[row, :p] = 0
        cursor = p
        if not q.suffixes:
            marks = q.prefix.readouts or [p - 1]
            readout[row, : len(marks)] = marks
        for j, suffix in enumerate(q.suffixes):
            n = len(suffix)
            sl = slice(cursor, cursor + n)
            ids[row, sl] = suffix
            pos[row, :, sl] = np.arange(q.prefix.next_pos, q.prefix.next_pos + n)
            attn[row, sl] = j + 1
            segments[row, sl] = 1
            readout[row, j] = cursor + n - 1
            cursor += n
        counts.append(q.num_readouts)
    return TextBatch(ids, attn, pos, readout, counts, segments, bucket)
