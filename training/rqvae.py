"""RQ-VAE training (PyTorch, offline): embeddings -> semantic-ID codebook artifact.

encoder MLP -> L residual codebooks of K codes -> decoder, trained with a
reconstruction loss plus, per level, a codebook loss and a commitment loss
(beta), with a straight-through estimator (TIGER / RQ-VAE). Codebooks are
initialised by k-means on the residuals of a warmed-up encoder, and codes that
went unused for an epoch are reset to residuals the encoder actually produces,
so utilisation stays high. The result is a numpy ``SemanticIdCodebook``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from enrich.vectors.semantic_ids import SemanticIdCodebook, code_stats


@dataclass(frozen=True)
class TrainConfig:
    levels: int = 3
    codes: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (256, 128)
    epochs: int = 40
    warmup_epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    beta: float = 0.25
    normalise: bool = True
    kmeans_sample: int = 16384
    seed: int = 0


EpochReport = dict[str, Any]


def load_embeddings(path: Path, column: str = "embedding") -> np.ndarray:
    """``[N, D]`` float32 from a ``.npy`` array or a Parquet column of equal-length lists."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=[column])
        x = np.asarray(table.column(column).to_pylist(), np.float32)
    else:
        x = np.load(path).astype(np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"{path}: expected a finite [N, D] array, got shape {x.shape}")
    return x


def data_hash(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()[:16]


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd; an empty cluster takes the worst-served point."""
    n = len(x)
    centers = x[torch.randint(n, (1,), generator=gen)]
    d2 = torch.cdist(x, centers).squeeze(1) ** 2
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        centers = torch.cat([centers, x[torch.multinomial(probs, 1, generator=gen)]])
        d2 = torch.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    for _ in range(iters):
        dist = torch.cdist(x, centers)
        assign = dist.argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        empty = counts.squeeze(1) == 0
        centers = torch.where(empty.unsqueeze(1), centers, sums / counts.clamp(min=1))
        if empty.any():
            worst = dist.gather(1, assign.unsqueeze(1)).squeeze(1).topk(int(empty.sum())).indices
            centers[empty] = x[worst]
    return centers


class RQVAE(nn.Module):
    def __init__(self, dim: int, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _mlp([dim, *cfg.hidden, cfg.latent_dim])
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), dim])
        self.codebooks = nn.Parameter(torch.randn(cfg.levels, cfg.codes, cfg.latent_dim) * 0.01)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalise:
            x = F.normalize(x, dim=-1)
        z = self.encoder(x)
        return F.normalize(z, dim=-1) if self.cfg.normalise else z

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Returns (quantised latent, codes [B, L], codebook+commitment loss, residual per level)."""
        residual, total = z, torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for book in self.codebooks:
            residuals.append(residual.detach())
            idx = torch.cdist(residual.detach(), book.detach()).argmin(1)
            q = book[idx]
            loss = loss + F.mse_loss(q, residual.detach()) + self.cfg.beta * F.mse_loss(residual, q.detach())
            total = total + q
            residual = residual - q.detach()
            codes.append(idx)
        z_q = z + (total - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        return z_q, torch.stack(codes, 1), loss, residuals

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalise:
            return (1 - F.cosine_similarity(x_hat, x, dim=-1)).mean()
        return F.mse_loss(x_hat, x)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, gen: torch.Generator) -> None:
        residual = self.encode(x)
        for level in range(self.cfg.levels):
            centers = _kmeans(residual, self.cfg.codes, 20, gen)
            self.codebooks.data[level] = centers
            residual = residual - centers[torch.cdist(residual, centers).argmin(1)]

    def to_codebook(self, meta: dict[str, Any]) -> SemanticIdCodebook:
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().numpy().astype(np.float32).copy()

        def layers(seq: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(arr(m.weight), arr(m.bias)) for m in seq if isinstance(m, nn.Linear)]

        return SemanticIdCodebook(layers(self.encoder), arr(self.codebooks), layers(self.decoder),
                                  self.cfg.normalise, meta)


def train_rqvae(vectors: np.ndarray, cfg: TrainConfig = TrainConfig(),
                on_epoch: Callable[[EpochReport], None] = lambda _r: None) -> SemanticIdCodebook:
    x_np = np.asarray(vectors, np.float32)
    if x_np.ndim != 2 or len(x_np) < cfg.codes:
        raise ValueError(f"need a [N, D] array with N >= {cfg.codes} (codes per level), got shape {x_np.shape}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.from_numpy(x_np)
    model = RQVAE(x.shape[1], cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, history = len(x), []
    steps = math.ceil(n / cfg.batch_size)

    for epoch in range(cfg.warmup_epochs + cfg.epochs):
        t0 = time.perf_counter()
        warm = epoch < cfg.warmup_epochs
        if epoch == cfg.warmup_epochs:
            sample = x[torch.randperm(n, generator=gen)[: cfg.kmeans_sample]]
            model.init_codebooks(sample, gen)
        perm = torch.randperm(n, generator=gen)
        usage = torch.zeros(cfg.levels, cfg.codes, dtype=torch.long)
        sums = {"loss": 0.0, "recon": 0.0, "quant": 0.0}
        last_residuals: list[torch.Tensor] = []
        for s in range(steps):
            batch = x[perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]]
            z = model.encode(batch)
            if warm:
                recon, quant = model.reconstruction_loss(model.decoder(z), batch), z.new_zeros(())
            else:
                z_q, codes, quant, last_residuals = model.quantize(z)
                recon = model.reconstruction_loss(model.decoder(z_q), batch)
                for level in range(cfg.levels):
                    usage[level] += torch.bincount(codes[:, level], minlength=cfg.codes)
            loss = recon + quant
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, v in (("loss", loss), ("recon", recon), ("quant", quant)):
                sums[key] += float(v.detach()) / steps
        report: EpochReport = {"epoch": epoch + 1, "phase": "warmup" if warm else "train", **sums,
                               "seconds": time.perf_counter() - t0}
        if not warm:
            report["utilisation"] = [float((u > 0).float().mean()) for u in usage]
            report["dead_codes_reset"] = _reset_dead_codes(model, usage, last_residuals, gen)
        history.append(report)
        on_epoch(report)

    book = model.to_codebook({})
    stats = code_stats(book.quantize(x_np), cfg.codes)
    book.meta = {"config": asdict(cfg), "trained_on": {"items": n, "dim": int(x.shape[1]),
                                                      "data_hash": data_hash(x_np)},
                 "metrics": {**stats, "final_loss": history[-1]["loss"], "final_recon": history[-1]["recon"]},
                 "history": history}
    return book


@torch.no_grad()
def _reset_dead_codes(model: RQVAE, usage: torch.Tensor, residuals: list[torch.Tensor],
                      gen: torch.Generator) -> int:
    """Point codes nobody chose this epoch at residuals the encoder produces now."""
    reset = 0
    for level, counts in enumerate(usage):
        dead = (counts == 0).nonzero().squeeze(1)
        if len(dead) == 0 or not residuals:
            continue
        pool = residuals[level]
        pick = torch.randint(len(pool), (len(dead),), generator=gen)
        noise = torch.randn(len(dead), pool.shape[1], generator=gen) * 1e-3
        model.codebooks.data[level, dead] = pool[pick] + noise
        reset += len(dead)
    return reset


def fit_with_progress(vectors: np.ndarray, cfg: TrainConfig, verbose: bool = False) -> SemanticIdCodebook:
    """``train_rqvae`` with a progress bar of the epochs (and each epoch's metrics as JSON when ``verbose``)."""
    import json

    from tqdm import tqdm

    with tqdm(total=cfg.warmup_epochs + cfg.epochs, unit="epoch", desc="rq-vae") as bar:
        def on_epoch(r: dict) -> None:
            util = "/".join(f"{u:.0%}" for u in r.get("utilisation", []))
            bar.set_postfix_str(f"{r['phase']} loss {r['loss']:.4f} recon {r['recon']:.4f}"
                                + (f" util {util} reset {r['dead_codes_reset']}" if util else ""))
            bar.update()
            if verbose:
                bar.write(json.dumps(r))

        return train_rqvae(vectors, cfg, on_epoch)
