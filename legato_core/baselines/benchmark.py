"""The benchmark: every method, the same targets, losses, step budget and judge.

For each method and held-out target: the engine's metrics at full strength (s = 1), the knob curve
ID_target(s) and retention(s) at 9 points (Spearman correlation and largest jump), steps until the judge
first calls the target forgotten, the dial's measures, and the attacks of ``legato_core.attacks`` on the
unlearned model (the attacker's best judge similarity; the base model's figures beside them).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import faceworld
from ..adapters.dial import DialMap
from ..attacks import AttackConfig, attack_model
from ..identity.model import load_identity_model
from ..metrics import dial_report, identity_similarity, judge_embeddings, unlearning_report
from ..unlearning.calibration import CalibrationConfig, knob_knots, profile_knob
from ..unlearning.engine import ForgetConfig
from .methods import METHODS, run_method


def default_learning_rates() -> dict[str, float]:
    """Each registered method's own learning rate (docs/lr_sweep.json; uno-s not swept; legato: the engine's)."""
    return {name: cls.default_lr for name, cls in METHODS.items()}


def _target(backend, identity: int):
    """The target's photo, its inversion before forgetting, and its 5 other photos (never trained on)."""
    img = faceworld.render([identity], 0)
    others = faceworld.render([identity] * 5, [1, 2, 3, 4, 5])
    with torch.enable_grad():
        w, v = backend.invert(img)
        ow, ov = backend.invert(others)
    return img, (w, v), others, ow, ov


def _kept(work: Path | None, name: str) -> dict | None:
    """What an earlier run with the same ``work`` folder kept as ``name`` (None: nothing, or no folder)."""
    path = None if work is None else work / f"{name}.json"
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def _keep(work: Path | None, name: str, value: dict) -> dict:
    """Write ``value`` to ``work/name.json`` (whole or not at all), so that a rerun resumes after it."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / f"{name}.tmp"
        tmp.write_text(json.dumps(value, default=float))
        tmp.replace(work / f"{name}.json")
    return value


def run_benchmark(backend, methods: list[str], identities: list[int], config: ForgetConfig,
                  lrs: dict[str, float] | None = None, audit_steps: int = 200, n_retain: int = 200,
                  n_fd: int = 500, check_every: int = 10, progress: bool = True, work: Path | None = None,
                  dial_views: int = 8) -> dict:
    """Every method on every target. With ``work``, each (method, target) record and each base-model attack is
    kept there as it finishes, and a rerun skips what is there; a folder made with other settings is refused.
    ``dial_views``: canonical views the dial measures are taken in, and seeded views its calibration measures
    in (8, as the engine calibrates; fewer only for quick checks). The retention curve follows 64 prior identities
    (fewer when ``n_retain`` is smaller)."""
    lrs = {**default_learning_rates(), **(lrs or {})}
    work = None if work is None else Path(work)
    if work is not None:
        settings = json.loads(json.dumps({"config": config.to_dict(), "lrs": lrs, "audit_steps": audit_steps,
                                          "n_retain": n_retain, "n_fd": n_fd, "check_every": check_every,
                                          "dial_views": dial_views}))
        saved = _kept(work, "settings") or _keep(work, "settings", settings)
        saved = {"dial_views": 8, **saved}  # folders from before the setting existed measured 8 views
        if saved != settings:
            differ = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ValueError(f"{work} holds a benchmark run with other settings ({', '.join(differ)}): "
                             "resume with the same settings, or give another --work folder")
    judge = load_identity_model("judge")
    views4 = backend.canonical_views(4)
    curve_s = np.linspace(0, 1, 9)
    results = []
    retain_lat = backend.sample_latents(min(64, n_retain), torch.Generator().manual_seed(4321))
    retain_views = backend.canonical_views(2)
    base_attacks = []
    bar = tqdm(total=len(methods) * len(identities), desc="benchmark", disable=not progress)
    for identity in identities:
        img, original, others, ow, ov = _target(backend, identity)
        w_u = original[0]
        attack_cfg = AttackConfig(steps=audit_steps)
        if audit_steps and len(base_attacks) < 3:  # the same attacks on the base model: each figure's reference
            best = _kept(work, f"base-{identity}") or _keep(work, f"base-{identity}", {
                a: max(b) for a, b in attack_model(backend, img, original, judge, others, attack_cfg).items()})
            base_attacks.append(best)
        with torch.no_grad():
            base4 = judge_embeddings(backend, judge, w_u.expand(4, -1), views4)
        for name in methods:
            done = _kept(work, f"{name}-{identity}")
            if done is not None:  # by an earlier run
                results.append(done)
                bar.update(1)
                continue
            first_forgotten = None

            def on_step(step, model, _base4=base4, _w=w_u):
                nonlocal first_forgotten
                if first_forgotten is None and step % check_every == 0:
                    with torch.no_grad():
                        sim = float((judge_embeddings(model, judge, _w.expand(4, -1), views4) * _base4).sum(1).mean())
                    if sim < judge.threshold:
                        first_forgotten = step

            t0 = time.time()
            res = run_method(name, backend, w_u, config, lr=lrs[name], on_step=on_step)
            wall = time.time() - t0
            rep = unlearning_report(backend, res.knob, w_u, 1.0, ow, ov, n_retain=n_retain, n_fd=n_fd,
                                    s_end=1.0, trainable_parameters=res.trainable_parameters)
            retention_curve = []
            for s in curve_s:
                sim = identity_similarity(res.knob, retain_lat, retain_views, float(s), judge)
                retention_curve.append([float(s), float(sim.mean())])
            attacks = {}
            if audit_steps:
                with res.knob.at(1.0) as model:
                    attacks = attack_model(model, img, original, judge, others, attack_cfg)
            dial = knob_dial(backend, res.knob, w_u, res.target_latent, judge, dial_views)
            res.close()
            results.append(_keep(work, f"{name}-{identity}", {
                "method": name, "identity": identity, "lr": lrs[name], "steps": config.steps,
                "wall_seconds": wall, "train_seconds": res.seconds, "steps_to_forget": first_forgotten,
                "target_stop_fraction": res.target.get("stop_fraction"), "target_kind": res.target.get("kind"),
                "target_pool_index": res.target.get("pool_index"),
                **{f"attack_{a}": max(best) for a, best in attacks.items()},
                "retention_curve": retention_curve, **rep, **dial}))
            bar.update(1)
    bar.close()
    return {"config": config.to_dict(), "methods": methods, "identities": identities, "lrs": lrs,
            "threshold": judge.threshold, "base_model_attacks": base_attacks,
            "torch_threads": torch.get_num_threads(), "dial_views": dial_views, "results": results,
            "legato_sites": config.sites_on(backend)}  # what config.sites None meant here


def knob_dial(backend, knob, w_u: torch.Tensor, target_latent: torch.Tensor, judge, views: int = 8) -> dict:
    """A method's knob s in [0, 1] as a slider, raw (u = s) and calibrated the way the engine calibrates LEGATO's
    adapters (loss network and pixels, never the judge; ``unlearning.calibration``), scored by the judge."""
    calibration = CalibrationConfig(views=views)  # 8, the engine's, unless a quick check asks for fewer
    views = backend.canonical_views(views)
    raw = dial_report(backend, knob, w_u, target_latent, float, views, judge)
    knots, _ = knob_knots(profile_knob(backend, knob, w_u, 1.0, calibration), calibration)
    position = DialMap(tuple(knots), "loss network and pixels", "").t_at
    cal = dial_report(backend, knob, w_u, target_latent, position, views, judge, manifold_positions=())
    return {"dial_raw": raw, "dial_calibrated": cal, "evenness_raw": raw["evenness"],
            "evenness_calibrated": cal["evenness"], "pixel_evenness_raw": raw["pixel_evenness"],
            "pixel_evenness_calibrated": cal["pixel_evenness"], "monotone_calibrated": cal["monotone"],
            "sharpness_min": raw["sharpness_min"], "manifold_db_min": min(raw["manifold_db"].values()),
            "reach_db": raw["reach_db"]}


# (result key, column header, decimals): counts print whole in every row, whatever their size
SUMMARY_KEYS = [("id_target", "ID_target ↓", 3), ("id_others", "ID_others ↓", 3), ("retention_mean", "retention ↑", 3),
                ("retention_p5", "retention p5 ↑", 3), ("fd_judge", "FD_judge ↓", 3),
                ("curve_spearman", "Spearman(s, ID)", 3), ("curve_max_jump", "max jump ↓", 3),
                ("evenness_raw", "evenness raw ↓", 2), ("evenness_calibrated", "evenness calibrated ↓", 2),
                ("pixel_evenness_calibrated", "pixel evenness calibrated ↓", 2),
                ("sharpness_min", "sharpness min ↑", 2),
                ("manifold_db_min", "on-manifold dB ↑", 1), ("reach_db", "reach dB ↑", 1),
                ("attack_reinvert", "attack a: re-inversion ↓", 3),
                ("attack_unseen_photos", "attack b: unseen photos ↓", 3),
                ("attack_encoder_guess", "attack c: encoder guess ↓", 3),
                ("attack_warm_start", "attack d: warm start ↓", 3),
                ("steps_to_forget", "steps to forget ↓", 0),
                ("wall_seconds", "wall s", 1), ("trainable_parameters", "trainable params", 0)]


def _fmt(values: list, decimals: int = 3) -> str:
    """Mean ± std of a column's values, "(n never)" for the rows without one (a method that never forgot)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    m = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    missing = len(values) - len(vals)
    return f"{m:,.{decimals}f} ± {sd:,.{decimals}f}" + (f" ({missing} never)" if missing else "")


def summarise(bench: dict) -> str:
    lines = ["| method | forgotten | " + " | ".join(h for _, h, _ in SUMMARY_KEYS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_KEYS)]
    thr = bench["threshold"]
    for m in bench["methods"]:
        rows = [r for r in bench["results"] if r["method"] == m]
        forgotten = sum(r["id_target"] < thr for r in rows)
        cells = [_fmt([r.get(k) for r in rows], decimals) for k, _, decimals in SUMMARY_KEYS]
        lines.append(f"| {m} | {forgotten}/{len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(bench: dict, out: Path) -> list[Path]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(bench, indent=2, default=float) + "\n")
    md = ["# Benchmark results", "", f"Judge threshold (same person): {bench['threshold']:.3f}. "
          f"Mean ± std over {len(bench['identities'])} targets (ids {bench['identities'][0]}…). "
          f"Knob s ∈ [0, 1] (LEGATO: t = s·T)."
          + (f" LEGATO adapters on sites {', '.join(bench['legato_sites'])}." if bench.get("legato_sites") else ""),
          "", summarise(bench), ""]
    (out / "results.md").write_text("\n".join(md))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ID_target vs knob", "retention vs knob"))
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880"]
    for i, m in enumerate(bench["methods"]):
        rows = [r for r in bench["results"] if r["method"] == m]
        s = [c[0] for c in rows[0]["curve"]]
        # a robust row shares its base row's knob, so its line is dashed to show through where they coincide
        line = {"color": colors[i % len(colors)], "dash": "dash" if m.endswith("-robust") else "solid"}
        fig.add_scatter(x=s, y=np.mean([[c[1] for c in r["curve"]] for r in rows], 0), name=m, row=1, col=1,
                        line=line)
        fig.add_scatter(x=s, y=np.mean([[c[1] for c in r["retention_curve"]] for r in rows], 0), name=m,
                        row=1, col=2, showlegend=False, line=line)
    fig.add_hline(y=bench["threshold"], line_dash="dash", annotation_text="judge threshold", row=1, col=1)
    fig.update_layout(title="Forgetting and retention along each method's knob", height=420, width=980)
    trade = go.Figure()
    for i, m in enumerate(bench["methods"]):
        rows = [r for r in bench["results"] if r["method"] == m]
        trade.add_scatter(x=[r["retention_mean"] for r in rows], y=[r["id_target"] for r in rows], mode="markers",
                          name=m, marker={"size": 10, "color": colors[i % len(colors)]})
    trade.add_hline(y=bench["threshold"], line_dash="dash", annotation_text="judge threshold")
    trade.update_layout(title="Trade-off: ID_target (lower = forgotten) vs retention (higher = kept)",
                        xaxis_title="retention mean", yaxis_title="ID_target", height=420, width=700)
    from ..figure_export import write_html, write_png

    paths = [out / "results.json", out / "results.md"]
    figures = {"curves": fig, "tradeoff": trade}
    paths += [write_html(f, out / f"{name}.html") for name, f in figures.items()]
    try:
        paths += write_png({out / f"{name}.png": f for name, f in figures.items()})
        (out / "PNG_EXPORT.txt").unlink(missing_ok=True)  # an earlier run's "unavailable" note is stale now
    except RuntimeError as e:  # no offline static exporter: the HTML (which opens offline) is the figure
        (out / "PNG_EXPORT.txt").write_text(f"{e}\n")
        paths.append(out / "PNG_EXPORT.txt")
    return paths


def default_config(quick: bool) -> ForgetConfig:
    cfg = ForgetConfig()
    if quick:
        cfg.steps = 40
    return cfg


__all__ = ["METHODS", "asdict", "default_config", "run_benchmark", "summarise", "write_outputs"]
