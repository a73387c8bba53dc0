"""The contrastive objective of stage 1 and the signals that tell a healthy representation from a collapsed one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B excerpts: each one's positive is the other excerpt of its track, the other 2B-2 negatives."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def representation_metrics(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """Collapse and quality signals of L2-normalised embeddings of two excerpts per track (rows match): the std
    across tracks times sqrt(dim) (~1 for directions spread like random ones, 0 for a single point), the effective
    rank, alignment (mean squared distance of a pair) and uniformity (Wang & Isola)."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    std = float(z1.std(dim=0).mean() * math.sqrt(z1.shape[1]))
    s = torch.linalg.svdvals(z1 - z1.mean(0))
    p = s / s.sum().clamp(min=1e-12)
    erank = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
    align = float((z1 - z2).pow(2).sum(1).mean())
    d2 = torch.cdist(z1, z1).pow(2)
    off = ~torch.eye(len(z1), dtype=torch.bool, device=z1.device)
    uniform = float(torch.log(torch.exp(-2 * d2[off]).mean())) if len(z1) > 1 else 0.0
    return {"embedding_std": std, "effective_rank": erank, "alignment": align, "uniformity": uniform}
