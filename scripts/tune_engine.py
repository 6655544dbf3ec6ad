"""Try engine settings on *validation* ids (never evaluation ids): the tuning log in docs/engine.md.

    python scripts/tune_engine.py NAME [field=value ...]      e.g.  K weights.preservation_identity=0.6
    python scripts/tune_engine.py S3 'sites=["b8", "b16", "b32"]'                 (lists as JSON)
    IDS=100500,100501 THREADS=1 MODEL=runs/packaged python scripts/tune_engine.py ...   (MODEL: a generator dir)
    SAVE=runs/tune python scripts/tune_engine.py ...     (keep each adapter and its latents)

Each ``field=value`` sets a (dotted) ForgetConfig field. Per id: train, then judge-only metrics at t = T with
200 retained identities, and forgetting in pixels (target's change over 32 other people's, their PSNR); prints
one JSON row per id and a SUMMARY line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import torch  # noqa: E402
# isort: on
from legato_core import faceworld  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.identity.model import load_identity_model  # noqa: E402
from legato_core.metrics import AdapterKnob, dial_report, unlearning_report  # noqa: E402
from legato_core.ranges import EVALUATION_START  # noqa: E402
from legato_core.unlearning.calibration import calibrate_dial  # noqa: E402
from legato_core.unlearning.engine import ForgetConfig, train_adapter  # noqa: E402


def configured(settings: list[str]) -> ForgetConfig:
    cfg = ForgetConfig()
    for item in settings:
        key, value = item.split("=", 1)
        *path, leaf = key.split(".")
        obj = cfg
        for p in path:
            obj = getattr(obj, p)
        cur = getattr(obj, leaf)
        if cur is None or isinstance(cur, list):  # lists (and fields that may hold one) as JSON: sites='["b8"]'
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
            setattr(obj, leaf, value)
        else:
            setattr(obj, leaf, type(cur)(value))
    return cfg


def main() -> None:
    name, settings = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    ids = [int(x) for x in os.environ.get("IDS", "100500,100501,100502").split(",")]
    if max(ids) >= EVALUATION_START:
        raise SystemExit(f"tuning must use validation ids, not evaluation ids (>= {EVALUATION_START:,})")
    backend = EmbeddedFaceBackend.from_pretrained(os.environ.get("MODEL") or None)
    rows = []
    for ident in ids:
        cfg = configured(settings)
        w, _ = backend.invert(faceworld.render([ident], 0))
        ow, ov = backend.invert(faceworld.render([ident] * 5, [1, 2, 3, 4, 5]))
        t0 = time.time()
        res = train_adapter(backend, w, cfg)
        seconds = time.time() - t0
        rep = unlearning_report(backend, AdapterKnob(backend, [res.adapter]), w, cfg.ode.t_end, ow, ov,
                                n_retain=200, n_fd=200)
        row = {"id": ident, "id_target": round(rep["id_target"], 3), "id_others": round(rep["id_others"], 3),
               "ret": round(rep["retention_mean"], 3), "p5": round(rep["retention_p5"], 3),
               "px_target": round(rep["pixel_change_target"], 4),
               "px_ratio": round(rep["pixel_change_ratio"], 2), "px_others_db": round(rep["others_psnr_db_mean"], 1),
               "mono": rep["curve_monotone"], "jump": round(rep["curve_max_jump"], 3), "sec": round(seconds, 1),
               "curve": [round(c[1], 3) for c in rep["curve"]],
               "stop": [round(f, 3) for f in res.adapter.description["target"].get("stop_fraction") or []]}
        if os.environ.get("SAVE"):  # SAVE=dir: keep each adapter and its latents (re-measure without retraining)
            res.adapter.save(Path(os.environ["SAVE"]) / f"{name}-{ident}.safetensors")
            torch.save({"w": w, "ow": ow, "ov": ov, "target": res.target_latent},
                       Path(os.environ["SAVE"]) / f"{name}-{ident}.pt")
        knob, views = AdapterKnob(backend, [res.adapter]), backend.canonical_views(8)
        judge = load_identity_model("judge")
        raw = dial_report(backend, knob, w, res.target_latent, lambda u, _t=cfg.ode.t_end: u * _t, views, judge)
        if res.adapter.dial is None:  # calibration=None in the settings: the dial as it would be
            res.adapter.set_dial(calibrate_dial(backend, res.adapter, w))
        cal = dial_report(backend, knob, w, res.target_latent, res.adapter.t_at, views, judge, manifold_positions=())
        row.update({"sharp": round(raw["sharpness_min"], 2), "reach": round(raw["reach_db"], 1),
                    "manifold": round(min(raw["manifold_db"].values()), 1),
                    "even_raw": round(raw["evenness"], 2), "even_cal": round(cal["evenness"], 2),
                    "px_even_raw": round(raw["pixel_evenness"], 2), "px_even_cal": round(cal["pixel_evenness"], 2),
                    "mono17": cal["monotone"], "curve17": [round(c, 3) for c in cal["judge_curve"]]})
        print(name, json.dumps(row), flush=True)
        rows.append(row)
    keys = ("id_target", "id_others", "ret", "p5", "px_ratio", "px_others_db", "sec", "sharp", "reach", "manifold",
            "even_raw", "even_cal", "px_even_raw", "px_even_cal")
    mean = {k: round(statistics.mean(r[k] for r in rows), 3) for k in keys}
    print("SUMMARY", name, settings, json.dumps({**mean, "monotone": sum(r["mono"] for r in rows),
                                                 "monotone17": sum(r["mono17"] for r in rows)}), flush=True)


if __name__ == "__main__":
    main()
