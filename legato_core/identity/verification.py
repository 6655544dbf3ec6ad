"""Face-verification metrics: ROC-AUC, TAR at a fixed FAR, and the cosine threshold that realises that FAR."""

from __future__ import annotations

import numpy as np
import torch


def pair_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all unordered pairs, split into (genuine, impostor)."""
    e = torch.nn.functional.normalize(embeddings.float(), dim=1)
    sim = e @ e.T
    iu = torch.triu_indices(len(e), len(e), offset=1)
    scores = sim[iu[0], iu[1]]
    same = labels[iu[0]] == labels[iu[1]]
    return scores[same].numpy(), scores[~same].numpy()


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest cosine above which at most ``far`` of impostor pairs lie."""
    return float(np.quantile(impostor, 1.0 - far, method="higher"))


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a random genuine pair outscores a random impostor pair (ties count half)."""
    scores = np.concatenate([genuine, impostor])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_g, n_i = len(genuine), len(impostor)
    return float((ranks[:n_g].sum() - n_g * (n_g + 1) / 2) / (n_g * n_i))


def verification_report(embeddings: torch.Tensor, labels: torch.Tensor, far: float = 1e-3,
                        threshold: float | None = None) -> dict[str, float]:
    """ROC-AUC, the FAR threshold on these pairs, and TAR at it (or at a given ``threshold``)."""
    genuine, impostor = pair_scores(embeddings, labels)
    own = threshold_at_far(impostor, far)
    thr = own if threshold is None else threshold
    return {
        "roc_auc": roc_auc(genuine, impostor),
        f"tar_at_far_{far:g}": float((genuine > own).mean()),
        "threshold_at_far": own,
        "threshold": thr,
        "tar_at_threshold": float((genuine > thr).mean()),
        "far_at_threshold": float((impostor > thr).mean()),
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
    }
