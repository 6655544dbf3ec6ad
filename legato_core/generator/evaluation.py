"""Measured quality of the embedded generator, judged by the ``judge`` network on held-out ids."""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm

from .. import faceworld
from ..faceworld.parts import THIN_PARTS, part_recovery
from ..identity.model import load_identity_model
from ..metrics import central_crop, psnr
from ..openmp import wait_policy


def gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared finite-difference gradient: how much edge a set of images holds (blur lowers it)."""
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    return dx.square().mean() + dy.square().mean()


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """Spectral energy above half the Nyquist frequency (radial frequency > 0.25 cycles per pixel)."""
    h, w = images.shape[-2:]
    spec = torch.fft.fft2(images - images.mean(dim=(-2, -1), keepdim=True)).abs().square()
    fy = torch.fft.fftfreq(h).abs().view(-1, 1)
    fx = torch.fft.fftfreq(w).abs().view(1, -1)
    mask = (fx.square() + fy.square()).sqrt() > 0.25
    return spec[..., mask].sum() / images[..., 0, 0].numel()


def pixel_fidelity(renders: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Pixel figures of renders against the face world's own images of the same faces and views."""
    return {
        "psnr_db": float(psnr(renders, truth).mean()),
        "central_psnr_db": float(psnr(central_crop(renders), central_crop(truth)).mean()),
        "sharpness_ratio": float(gradient_energy(renders) / gradient_energy(truth)),
        "high_frequency_ratio": float(high_frequency_energy(renders) / high_frequency_energy(truth)),
    }


@torch.no_grad()
def render_times_side_by_side(backends: dict, rounds: int = 30, batch: int = 8, seed: int = 7) -> dict[str, float]:
    """Median ms per batch render of each backend, timed in alternation in one process, so that a busy machine
    slows them all alike (a ratio of medians from separate runs on a shared CPU says little)."""
    inputs = {}
    for name, b in backends.items():
        gen = torch.Generator().manual_seed(seed)
        inputs[name] = (b.sample_latents(batch, gen), b.sample_views(batch, gen))
        b.render(*inputs[name])  # builds the kernels for this shape
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, b in backends.items():
            t0 = time.perf_counter()
            b.render(*inputs[name])
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def evaluate_generator(backend, identities: int = 200, first_identity: int = 1_000_000, new_views: int = 5,
                       random_pairs: int = 500, batch: int = 50, progress: bool = True,
                       pixel_views: int = 3, reference=None) -> dict:
    """Judge figures (same person on re-render and in new views, prior distinct/consistent) and pixel figures
    against the face world's own pictures: the inverted view re-rendered, and the inverted identity drawn in
    ``pixel_views`` other views (with their true view vectors) next to the face world's images of them.
    ``reference``: another backend (the shipped generator) whose batch-of-8 render is timed beside this one's."""
    judge = load_identity_model("judge")
    thr = judge.threshold
    same, new_same, inv_times = [], [], []
    renders, truths, new_renders, new_truths = [], [], [], []
    shown, new_shown = [], []  # (identity, view) of the faces in truths and new_truths
    ids = list(range(first_identity, first_identity + identities))
    for s in tqdm(range(0, len(ids), batch), desc="inversion", disable=not progress):
        chunk = ids[s:s + batch]
        img = faceworld.render(chunk, 0)
        t0 = time.perf_counter()
        with torch.enable_grad():
            w, v = backend.invert(img)
        inv_times.append((time.perf_counter() - t0) / len(chunk))
        rec = backend.render(w, v)
        renders.append(rec)
        truths.append(img)
        people = faceworld.sample_identities(chunk)
        shown.append((people, faceworld.sample_views(chunk, 0)))
        e_img = judge.embed(img)
        same.append((e_img * judge.embed(rec)).sum(1))
        for k in range(1, new_views + 1):
            nv = faceworld.encode_view(faceworld.sample_views(chunk, [1000 + k] * len(chunk)))
            out = backend.render(w, nv)
            new_same.append((e_img * judge.embed(out)).sum(1))
            if k <= pixel_views:
                new_renders.append(out)
                new_truths.append(faceworld.render(chunk, [1000 + k] * len(chunk)))
                new_shown.append((people, faceworld.sample_views(chunk, [1000 + k] * len(chunk))))
    same, new_same = torch.cat(same), torch.cat(new_same)
    rerender = pixel_fidelity(torch.cat(renders), torch.cat(truths))
    new_view = pixel_fidelity(torch.cat(new_renders), torch.cat(new_truths))
    all_renders, all_truths = torch.cat(renders + new_renders), torch.cat(truths + new_truths)
    both = pixel_fidelity(all_renders, all_truths)
    identity = {k: torch.cat([i[k] for i, _ in shown + new_shown]) for k in shown[0][0]}
    view = {k: torch.cat([v[k] for _, v in shown + new_shown]) for k in shown[0][1]}
    parts = {}
    for part in THIN_PARTS:  # how much of each thin part the renders draw (0: as if absent, 1: exact)
        recovery, faces = part_recovery(all_renders, identity, view, all_truths, part)
        parts[f"{part}_recovery"], parts[f"{part}_faces"] = recovery, faces

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
    timed = render_times_side_by_side({"model": backend, **({"reference": reference} if reference else {})})
    speed = {"ms_per_batch8": timed["model"]}
    if reference is not None:
        speed.update(reference_ms_per_batch8=timed["reference"],
                     render_time_ratio=timed["model"] / timed["reference"])
    return {
        "identities": identities, "first_identity": first_identity, "judge_threshold": thr,
        "same_person_rate": float((same > thr).float().mean()),
        "new_view_same_person_rate": float((new_same > thr).float().mean()),
        "random_pair_distinct_rate": float((distinct < thr).float().mean()),
        "consistency_rate": float((consistent > thr).float().mean()),
        "psnr_db": rerender["psnr_db"],
        "central_psnr_db": rerender["central_psnr_db"],
        "new_view_psnr_db": new_view["psnr_db"],
        "new_view_central_psnr_db": new_view["central_psnr_db"],
        "sharpness_ratio": both["sharpness_ratio"],
        "high_frequency_ratio": both["high_frequency_ratio"],
        **parts,
        "same_person_cosine_mean": float(same.mean()),
        "new_view_cosine_mean": float(new_same.mean()),
        **speed,
        "invert_seconds_single": statistics.median(single),
        "parameters": backend.parameter_count(),
        "torch_threads": torch.get_num_threads(),
        "openmp_wait": wait_policy(),
    }
