"""Direct, loop-per-image transcriptions of SEL and SFL from the method's formulas
(``../shared/docs/method.md``).

Deliberately naive (a full similarity matrix, Python loops over images and
classes): the tests check the vectorised losses against these, and the loss
benchmark (``benchmarks/loss_speed.py``) times them as the reference's way.
"""

import torch
import torch.nn.functional as F


def sel_loop(logits, embedding, target, labelled):
    """L_SEL = mean_p E(p) * sum_c -G_c log clip(P_c, 1e-10, 1); multi-class per class."""
    B, C1, H, W = logits.shape
    C = C1 - 1
    P = torch.softmax(logits.float(), dim=1)
    total = 0.0
    for b in range(B):
        f = embedding[b].float().flatten(1).T  # (N, D)
        N = f.shape[0]
        lab = labelled[b].flatten(1)  # (C, N)
        any_lab = lab.any(0)
        energies = []
        for c in range(C):
            A = torch.nonzero(lab[c]).flatten().tolist()
            e = torch.ones(N)
            if A:
                e_list = []
                for i in range(N):
                    if any_lab[i]:
                        e_list.append(torch.tensor(1.0))
                        continue
                    s = torch.stack([(1 + F.cosine_similarity(f[i], f[j], dim=0, eps=1e-12)) / 2 for j in A])
                    e_list.append(1 - s.mean())
                e = torch.stack(e_list)
            energies.append(e)
        e = torch.stack(energies)  # (C, N)
        e = torch.cat([e.min(0, keepdim=True).values, e], 0).view(1, C1, *embedding.shape[-2:])
        E = F.interpolate(e, size=(H, W), mode="bilinear", align_corners=False)[0]
        ce = -target[b] * torch.log(P[b].clamp(1e-10, 1))
        total = total + (E * ce).sum(0).mean()
    return total / B


def sfl_loop(embedding, labelled, margin=10.0):
    """L_SFL(image) = |A|/N * mean_{i in A, j not in A} exp(-(||f_i - f_j|| - m)); batch mean."""
    B = embedding.shape[0]
    total = 0.0
    for b in range(B):
        f = embedding[b].float().flatten(1).T
        N = f.shape[0]
        a = labelled[b].flatten(1).any(0)
        A = torch.nonzero(a).flatten().tolist()
        U = torch.nonzero(~a).flatten().tolist()
        if not A or not U:
            continue
        vals = []
        for i in A:
            for j in U:
                d = torch.sqrt(((f[i] - f[j]) ** 2).sum().clamp_min(1e-12))
                vals.append(torch.exp(-(d - margin)))
        total = total + len(A) / N * torch.stack(vals).mean()
    return total / B if torch.is_tensor(total) else torch.tensor(0.0)


def sel_sfl_per_image(logits, embedding, target, labelled, lambda1=2.0, lambda2=0.05, margin=10.0):
    """SEL + SFL the way the reference code computes them: a Python loop over the
    batch, a full N x N cosine-similarity matrix per image (single class)."""
    B, C1, H, W = logits.shape
    P = torch.softmax(logits.float(), dim=1)
    sel = 0.0
    sfl = 0.0
    for b in range(B):
        f = embedding[b].float().flatten(1).T  # (N, D)
        N = f.shape[0]
        a = labelled[b].flatten(1).any(0)  # (N,)
        unit = F.normalize(f, dim=1, eps=1e-12)
        sim = (1 + unit @ unit.T) / 2  # (N, N)
        if a.any():
            e = 1 - (sim * a.float()).sum(1) / a.float().sum()
            e = torch.where(a, torch.ones_like(e), e)
            d = torch.sqrt(((f[:, None] - f[None]) ** 2).sum(-1).clamp_min(1e-12))  # (N, N)
            pair = a.float()[:, None] * (~a).float()[None]
            if pair.sum() > 0:
                sfl = sfl + a.float().sum() / N * (torch.exp(-(d - margin)) * pair).sum() / pair.sum()
        else:
            e = torch.ones(N)
        E = F.interpolate(e.view(1, 1, *embedding.shape[-2:]), size=(H, W), mode="bilinear", align_corners=False)[0]
        sel = sel + (E * (-target[b] * torch.log(P[b].clamp(1e-10, 1)))).sum(0).mean()
    return lambda1 * sel / B + lambda2 * sfl / B
