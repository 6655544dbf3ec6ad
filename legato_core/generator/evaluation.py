"""Measured quality of the embedded generator, judged by the ``judge`` network on held-out ids."""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm

from .. import faceworld
from ..identity.model import load_identity_model


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).square().mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


@torch.no_grad()
def evaluate_generator(backend, identities: int = 200, first_identity: int = 1_000_000, new_views: int = 5,
                       random_pairs: int = 500, batch: int = 50, progress: bool = True) -> dict:
    judge = load_identity_model("judge")
    thr = judge.threshold
    same, new_same, psnrs, inv_times = [], [], [], []
    ids = list(range(first_identity, first_identity + identities))
    for s in tqdm(range(0, len(ids), batch), desc="inversion", disable=not progress):
        chunk = ids[s:s + batch]
        img = faceworld.render(chunk, 0)
        t0 = time.perf_counter()
        with torch.enable_grad():
            w, v = backend.invert(img)
        inv_times.append((time.perf_counter() - t0) / len(chunk))
        rec = backend.render(w, v)
        e_img = judge.embed(img)
        same.append((e_img * judge.embed(rec)).sum(1))
        psnrs.append(psnr(rec, img))
        for k in range(1, new_views + 1):
            nv = faceworld.encode_view(faceworld.sample_views(chunk, [1000 + k] * len(chunk)))
            new_same.append((e_img * judge.embed(backend.render(w, nv))).sum(1))
    same, new_same, psnrs = torch.cat(same), torch.cat(new_same), torch.cat(psnrs)

    gen = torch.Generator().manual_seed(99)
    a = backend.sample_latents(random_pairs, gen)
    b = backend.sample_latents(random_pairs, gen)
    va, vb = backend.sample_views(random_pairs, gen), backend.sample_views(random_pairs, gen)
    ea = judge.embed(backend.render(a, va))
    distinct = (ea * judge.embed(backend.render(b, vb))).sum(1)
    consistent = (ea * judge.embed(backend.render(a, vb))).sum(1)

    # single-image inversion time (what an upload costs), after one untimed call that builds the kernels for
    # batch-1 shapes (a one-off cost per process)
    one = faceworld.render([first_identity], 0)
    with torch.enable_grad():
        backend.invert(one)
    single = []
    for _ in range(5):
        t0 = time.perf_counter()
        with torch.enable_grad():
            backend.invert(one)
        single.append(time.perf_counter() - t0)
    w8, v8 = backend.sample_latents(8, gen), backend.sample_views(8, gen)
    backend.render(w8, v8)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        backend.render(w8, v8)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "identities": identities, "first_identity": first_identity, "judge_threshold": thr,
        "same_person_rate": float((same > thr).float().mean()),
        "new_view_same_person_rate": float((new_same > thr).float().mean()),
        "random_pair_distinct_rate": float((distinct < thr).float().mean()),
        "consistency_rate": float((consistent > thr).float().mean()),
        "psnr_db": float(psnrs.mean()),
        "same_person_cosine_mean": float(same.mean()),
        "new_view_cosine_mean": float(new_same.mean()),
        "ms_per_batch8": statistics.median(times),
        "invert_seconds_single": statistics.median(single),
        "parameters": backend.parameter_count(),
        "torch_threads": torch.get_num_threads(),
    }
