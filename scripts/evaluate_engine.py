"""Run `python -m legato_core forget` on held-out targets and summarise the reports into docs/engine.md.

    python scripts/evaluate_engine.py --targets 10 --first-identity 1000000

Each target is a separate CLI process with default settings (what a user gets); reports land in
docs/engine_reports/<id>.json. Rendering latency (1 target + 4 retained identities at a new t) is measured
in-process on the last adapter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads


def render_latency(adapter_path: Path, identity: int, model_path: str | None = None,
                   sweep_png: Path = ROOT / "docs" / "engine_t_sweep.png") -> dict:
    import torch

    from legato_core import faceworld
    from legato_core.adapters import ODEAdapter, active
    from legato_core.backends.embedded import EmbeddedFaceBackend

    torch.set_num_threads(2)
    backend = EmbeddedFaceBackend.from_pretrained(model_path)
    adapter = ODEAdapter.load(adapter_path, backend)
    w, v = backend.invert(faceworld.render([identity], 0))
    lat = torch.cat([w, backend.sample_latents(4, torch.Generator().manual_seed(0))])
    views = v.expand(5, -1)
    times, zero = [], []
    with torch.no_grad():
        # docs/engine_t_sweep.png: rows = target (3 views) then 3 retained identities; columns = 9 evenly spaced
        # slider positions u = 0, 1/8, ..., 1 (t from the adapter's dial)
        rows_lat = torch.cat([w.expand(3, -1), lat[1:4]])
        rows_view = torch.cat([v, backend.canonical_views(3)[1:], v.expand(3, -1)])
        ts = [adapter.t_at(k / 8) for k in range(9)]
        cells = []
        for t in ts:
            with active(backend, [(adapter, t)]):
                cells.append(backend.render(rows_lat, rows_view))
        grid = torch.stack(cells, 1).flatten(0, 1)
        faceworld.save_png(faceworld.contact_sheet(grid, rows=len(rows_lat), upscale=2),
                           sweep_png)
        for t in torch.linspace(0.05, 1.6, 21).tolist():
            with active(backend, [(adapter, t)]):
                t0 = time.perf_counter()
                backend.render(lat, views)
                times.append((time.perf_counter() - t0) * 1000)
        with active(backend, [(adapter, 0.0)]):
            for _ in range(10):
                t0 = time.perf_counter()
                backend.render(lat, views)
                zero.append((time.perf_counter() - t0) * 1000)
        base = []
        for _ in range(10):
            t0 = time.perf_counter()
            backend.render(lat, views)
            base.append((time.perf_counter() - t0) * 1000)
    return {"render_ms_median": statistics.median(times), "render_ms_t0": statistics.median(zero),
            "render_ms_no_adapter": statistics.median(base), "sweep_t": [round(t, 4) for t in ts]}


MANIFOLD_BAR_POSITIONS = ("0.25", "0.5", "0.75", "0.875", "1.0")


def dial_summary(reports: list[dict]) -> dict:
    """The dial's bars over the targets: sharpness along the dial, on-manifold PSNR at 1/4 .. 1, scope, evenness of
    the judge's curve and of pixels (17 positions), monotone; calibrated (what the slider does) and raw (t = u T)."""
    dials, raws = [r["dial"] for r in reports], [r["dial_raw"] for r in reports]
    per = {r.get("identity", i): {
        "sharpness_min": round(d["sharpness_min"], 3),
        "manifold_db_min": round(min(d["manifold_db"][k] for k in MANIFOLD_BAR_POSITIONS), 2),
        "reach_db": round(d["reach_db"], 2), "evenness": round(d["evenness"], 3),
        "pixel_evenness": round(d["pixel_evenness"], 3), "monotone": d["monotone"],
        "evenness_raw": round(raw["evenness"], 3), "pixel_evenness_raw": round(raw["pixel_evenness"], 3),
        "monotone_raw": raw["monotone"]} for i, (r, d, raw) in enumerate(zip(reports, dials, raws, strict=True))}
    rows = list(per.values())
    return {
        "sharpness_min": min(x["sharpness_min"] for x in rows),
        "sharpness_at_least_0_85": sum(x["sharpness_min"] >= 0.85 for x in rows),
        "manifold_db_min": min(x["manifold_db_min"] for x in rows),
        "manifold_at_least_36_db": sum(x["manifold_db_min"] >= 36 for x in rows),
        "manifold_db_original_mean": statistics.mean(d["manifold_db_original"] for d in dials),
        "reach_db_min": min(x["reach_db"] for x in rows),
        "reach_at_least_30_db": sum(x["reach_db"] >= 30 for x in rows),
        "evenness_max": max(x["evenness"] for x in rows),
        "evenness_at_most_1_5": sum(x["evenness"] <= 1.5 for x in rows),
        "evenness_at_most_2": sum(x["evenness"] <= 2.0 for x in rows),
        "pixel_evenness_max": max(x["pixel_evenness"] for x in rows),
        "pixel_evenness_at_most_2": sum(x["pixel_evenness"] <= 2.0 for x in rows),
        "monotone": sum(x["monotone"] for x in rows),
        "evenness_raw_median": statistics.median(x["evenness_raw"] for x in rows),
        "pixel_evenness_raw_median": statistics.median(x["pixel_evenness_raw"] for x in rows),
        "monotone_raw": sum(x["monotone_raw"] for x in rows),
        "per_target": per}


def in_repo(path: Path) -> str:
    """``path`` as given to the forget CLI, which runs from the repository root: relative where it can be, so
    the reports (committed in docs/) do not record this machine's directories."""
    p = path.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--first-identity", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "engine_reports")
    ap.add_argument("--extra", default="", help="extra flags passed to every forget call")
    ap.add_argument("--model-path", help="an embedded generator directory (default: the shipped assets/generator)")
    ap.add_argument("--sweep-png", type=Path, default=ROOT / "docs" / "engine_t_sweep.png")
    ap.add_argument("--compare-config", type=Path,
                    help="a ForgetConfig JSON (e.g. docs/engine_configs/session14.json): each target is also forgotten "
                         "with it, right after the defaults, so both are timed side by side on the same machine")
    ap.add_argument("--compare-out", type=Path, default=ROOT / "docs" / "engine_reports_session14")
    ap.add_argument("--summarise-only", action="store_true",
                    help="reuse the reports and adapters already in --out; measure render latency and summarise")
    ap.add_argument("--recalibrate", action="store_true",
                    help="reuse the adapters in --out (their training unchanged), measure each dial again with "
                         "today's calibration, re-measure the calibrated dial into its report, then summarise "
                         "(the --compare-config reports are reused as they are)")
    ap.add_argument("--attach-scope", action="store_true",
                    help="reuse the adapters in --out (their training unchanged), give each today's scope (set after "
                         "training: the person's path is unchanged), and re-measure what it changes (ID_others, "
                         "retention, fd_judge, the pixel figures) into its report, then summarise")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reports, compared = [], []
    runs = [(args.out, [])]
    if args.compare_config:
        args.compare_out.mkdir(parents=True, exist_ok=True)
        runs.append((args.compare_out, ["--config", in_repo(args.compare_config)]))
    for i in range(args.first_identity, args.first_identity + args.targets):
        for out, flags in runs:  # alternating per target: both configurations meet the machine in the same hour
            if args.recalibrate and out == args.out:
                rep = recalibrate_target(i, out, args.model_path)
            elif args.attach_scope and out == args.out:
                rep = attach_scope(i, out, args.model_path)
            else:
                rep = forget_target(i, out, [*flags, *args.extra.split()], args.model_path,
                                    args.summarise_only or args.recalibrate or args.attach_scope)
            (reports if out == args.out else compared).append(rep)
    lat = render_latency(args.out / f"{args.first_identity + args.targets - 1}.safetensors",
                         args.first_identity + args.targets - 1, args.model_path, args.sweep_png)
    summary = summarise(reports, args)
    summary.update(lat)
    if compared:
        summary["compared"] = {"config": in_repo(args.compare_config), **summarise(compared, args)}
        summary["seconds_median_ratio"] = summary["seconds_median"] / summary["compared"]["seconds_median"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def forget_target(identity: int, out: Path, flags: list[str], model_path: str | None, reuse: bool) -> dict:
    """One target through the forget CLI (a fresh process, default settings unless ``flags`` say otherwise)."""
    report = out / f"{identity}.json"
    if reuse:
        return json.loads(report.read_text())
    cmd = [sys.executable, "-m", "legato_core", "forget", "--identity", str(identity), "--quiet",
           "--out", in_repo(out / f"{identity}.safetensors"), "--report", in_repo(report),
           *(["--model-path", model_path] if model_path else []), *flags]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    rep = json.loads(report.read_text())
    rep["process_seconds"] = time.time() - t0
    report.write_text(json.dumps(rep, indent=2) + "\n")
    print(f"{out.name}/{identity}: id_target {rep['id_target']:.3f} id_others {rep['id_others']:.3f} "
          f"retention {rep['retention_mean']:.3f}/{rep['retention_p5']:.3f} {rep['seconds']:.1f}s "
          f"pixel ratio {rep['pixel_change_ratio']:.1f} others {rep['others_psnr_db_mean']:.1f} dB", flush=True)
    return rep


def recalibrate_target(identity: int, out: Path, model_path: str | None) -> dict:
    """Today's calibration on a saved adapter: measure its dial again (the weights are untouched), save the adapter
    with the new map (atomically), and re-measure the calibrated dial into its report. For a change to the
    calibration alone, where retraining would reproduce the same weights."""
    import dataclasses
    import os

    import torch

    from legato_core import faceworld
    from legato_core.adapters import ODEAdapter
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.backends.registry import load_judge
    from legato_core.metrics import AdapterKnob, dial_report
    from legato_core.unlearning.calibration import CalibrationConfig, calibrate_dial
    from legato_core.unlearning.targets import recorded_target

    torch.set_num_threads(2)
    report_path, adapter_path = out / f"{identity}.json", out / f"{identity}.safetensors"
    rep = json.loads(report_path.read_text())
    if rep.get("judge") != "embedded":
        raise SystemExit(f"{report_path}: judged by {rep.get('judge')!r}; --recalibrate re-measures the embedded "
                         "default's reports")
    backend = EmbeddedFaceBackend.from_pretrained(model_path)
    adapter = ODEAdapter.load(adapter_path, backend)
    w, _ = backend.invert(faceworld.render([identity], 0))  # as the forget CLI does
    target = recorded_target(backend, w, adapter.description)
    t0 = time.time()
    config = CalibrationConfig()
    adapter.set_dial(calibrate_dial(backend, adapter, w, config))
    seconds = time.time() - t0
    tmp = adapter_path.with_suffix(".tmp.safetensors")
    adapter.save(tmp)
    os.replace(tmp, adapter_path)
    knob, views = AdapterKnob(backend, [adapter]), backend.canonical_views(8)
    rep["dial"] = dial_report(backend, knob, w, target, adapter.t_at, views,
                              load_judge("embedded", None, backend))
    rep["dial_map"] = {"t": list(adapter.dial.t), "measured_by": adapter.dial.measured_by}
    rep["recalibrated"] = {"calibration": dataclasses.asdict(config), "seconds": round(seconds, 2)}
    report_path.write_text(json.dumps(rep, indent=2) + "\n")
    d = rep["dial"]
    print(f"{out.name}/{identity}: recalibrated in {seconds:.1f}s, evenness {d['evenness']:.2f} pixel "
          f"{d['pixel_evenness']:.2f} monotone {d['monotone']}", flush=True)
    return rep


def attach_scope(identity: int, out: Path, model_path: str | None) -> dict:
    """Today's scope on a saved adapter: its centres made as the engine makes them (the upload's latent and its
    view anchors), saved with it (atomically); the report's figures that a scope can change are measured again."""
    import dataclasses
    import os

    import torch

    from legato_core import faceworld
    from legato_core.adapters import ODEAdapter
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.backends.registry import load_judge
    from legato_core.metrics import AdapterKnob, unlearning_report
    from legato_core.unlearning.anchors import person_latents
    from legato_core.unlearning.engine import ForgetConfig, make_scope

    torch.set_num_threads(2)
    report_path, adapter_path = out / f"{identity}.json", out / f"{identity}.safetensors"
    rep = json.loads(report_path.read_text())
    backend = EmbeddedFaceBackend.from_pretrained(model_path)
    adapter = ODEAdapter.load(adapter_path, backend)
    w, _ = backend.invert(faceworld.render([identity], 0))  # as the forget CLI does
    ow, ov = backend.invert(faceworld.render([identity] * 5, [1, 2, 3, 4, 5]))
    cfg = ForgetConfig()
    seed = adapter.description.get("seed", cfg.seed)
    adapter.set_scope(make_scope(backend, person_latents(backend, w, cfg.view_anchors, seed), cfg.scope))
    tmp = adapter_path.with_suffix(".tmp.safetensors")
    adapter.save(tmp)
    os.replace(tmp, adapter_path)
    new = unlearning_report(backend, AdapterKnob(backend, [adapter]), w, cfg.ode.t_end, ow, ov,
                            judge=load_judge("embedded", None, backend), **backend.report_sizes(None))
    changed = ("id_others", "id_others_each", "retention_mean", "retention_p5", "fd_judge",
               *(k for k in new if k.startswith("pixel_") or k.startswith("others_")))
    rep["without_scope"] = {k: rep.get(k) for k in changed}
    rep.update({k: new[k] for k in changed if k in new})
    rep["scope"] = dataclasses.asdict(cfg.scope)
    report_path.write_text(json.dumps(rep, indent=2) + "\n")
    print(f"{out.name}/{identity}: scope attached; retention {rep['without_scope']['retention_mean']:.3f} -> "
          f"{rep['retention_mean']:.3f}, id_others {rep['without_scope']['id_others']:.3f} -> {rep['id_others']:.3f}",
          flush=True)
    return rep


def summarise(reports: list[dict], args) -> dict:
    thr = reports[0]["threshold"]
    return {
        "targets": len(reports), "first_identity": args.first_identity, "threshold": thr,
        "generator": args.model_path or "assets/generator",
        "id_target_below_threshold": sum(r["id_target"] < thr for r in reports),
        "id_target_mean": statistics.mean(r["id_target"] for r in reports),
        "id_others_below_threshold": sum(r["id_others"] < thr for r in reports),
        "id_others_mean": statistics.mean(r["id_others"] for r in reports),
        "retention_mean": statistics.mean(r["retention_mean"] for r in reports),
        "retention_p5_mean": statistics.mean(r["retention_p5"] for r in reports),
        "retention_p5_min": min(r["retention_p5"] for r in reports),
        "fd_judge_mean": statistics.mean(r["fd_judge"] for r in reports),
        "seconds_median": statistics.median(r["seconds"] for r in reports),
        "trainable_fraction": reports[0]["trainable_fraction"],
        "trainable_parameters": reports[0]["trainable_parameters"],
        "monotone_curves": sum(r["curve_monotone"] for r in reports),
        "curve_max_jump_mean": statistics.mean(r["curve_max_jump"] for r in reports),
        "curve_max_jump_max": max(r["curve_max_jump"] for r in reports),
        # forgetting in pixels (central half): target change / others' change >= 10, others' PSNR >= 35 dB
        "pixel_change_ratio_min": min(r["pixel_change_ratio"] for r in reports),
        "pixel_change_ratio_at_least_10": sum(r["pixel_change_ratio"] >= 10 for r in reports),
        "others_psnr_db_min": min(r["others_psnr_db_min"] for r in reports),
        "others_psnr_db_mean": statistics.mean(r["others_psnr_db_mean"] for r in reports),
        # the bar is each target's mean over its 32 other people; how many single people stay within 35 / 30 dB
        "others_compared": sum(len(r["others_psnr_db_each"]) for r in reports),
        "others_at_least_35_db": sum(x >= 35 for r in reports for x in r["others_psnr_db_each"]),
        "others_at_least_30_db": sum(x >= 30 for r in reports for x in r["others_psnr_db_each"]),
        "pixel_per_target": {r.get("identity", i): {"change_ratio": round(r["pixel_change_ratio"], 2),
                                                    "others_psnr_db_mean": round(r["others_psnr_db_mean"], 2),
                                                    "others_psnr_db_min": round(r["others_psnr_db_min"], 2),
                                                    "others_below_35_db": sum(x < 35 for x in r["others_psnr_db_each"])}
                             for i, r in enumerate(reports)},
        "dial": dial_summary(reports),
    }


if __name__ == "__main__":
    main()
