"""Command line: ``python -m legato_core <command>`` (also installed as ``legato``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .backends.registry import (
    BACKENDS,
    DEVICES,
    DTYPES,
    JUDGES,
    BackendSpec,
    check_judge_independent,
    resolve_judge,
)

if TYPE_CHECKING:
    from .unlearning.engine import ForgetConfig

# backend option -> environment variable, for app.py (a Hugging Face Space is configured without flags)
BACKEND_ENV = {"backend": "LEGATO_BACKEND", "model_path": "LEGATO_MODEL_PATH",
               "base_model_path": "LEGATO_BASE_MODEL_PATH", "insightface_pack": "LEGATO_INSIGHTFACE_PACK",
               "arcface_torch": "LEGATO_ARCFACE_TORCH", "device": "LEGATO_DEVICE", "dtype": "LEGATO_DTYPE",
               "gradient_checkpointing": "LEGATO_GRADIENT_CHECKPOINTING",
               "num_inference_steps": "LEGATO_INFERENCE_STEPS", "allow_downloads": "LEGATO_ALLOW_DOWNLOADS"}


def add_backend_options(parser: argparse.ArgumentParser, judge: bool = True,
                        environ: Mapping[str, str] | None = None) -> None:
    """The backend flags (``forget``, ``render``, ``bench`` and ``app.py``); they map one to one onto
    :class:`~legato_core.backends.registry.BackendSpec`. With ``environ``, defaults come from ``LEGATO_*`` variables."""
    env = {k: environ.get(v) or None for k, v in BACKEND_ENV.items()} if environ is not None else {}
    g = parser.add_argument_group("backend", "which generator runs; paths are local unless --allow-downloads")
    g.add_argument("--backend", choices=BACKENDS, default=env.get("backend") or "embedded",
                   help="embedded: the shipped face-world model (CPU); arc2face / ddpm: diffusers checkpoints")
    g.add_argument("--model-path", metavar="PATH", default=env.get("model_path"),
                   help="arc2face: Arc2Face's models/ folder; ddpm: the checkpoint folder; embedded: a generator "
                        "folder (default: assets/generator); a hub id (owner/name) with --allow-downloads")
    g.add_argument("--base-model-path", metavar="PATH", default=env.get("base_model_path"),
                   help="arc2face: Stable Diffusion 1.5 folder (vae/, tokenizer/, scheduler/), or a hub id with "
                        "--allow-downloads")
    g.add_argument("--insightface-pack", metavar="PATH", default=env.get("insightface_pack"),
                   help="insightface pack folder (e.g. antelopev2 with Arc2Face's arcface.onnx): embeds uploads "
                        "for arc2face; a hub id (owner/name[/folder]) with --allow-downloads")
    g.add_argument("--arcface-torch", metavar="PATH", default=env.get("arcface_torch"),
                   help="differentiable ArcFace (TorchScript .pt or torch.export .pt2) for an identity loss")
    g.add_argument("--device", choices=DEVICES, default=env.get("device"),
                   help="arc2face/ddpm (default: cuda when available, else cpu)")
    g.add_argument("--dtype", choices=DTYPES, default=env.get("dtype"),
                   help="arc2face/ddpm (default on cuda: fp16 for arc2face, as its code, bf16 for ddpm; fp32 on cpu)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   default=(env.get("gradient_checkpointing") or "").lower() in ("1", "true", "yes"),
                   help="arc2face/ddpm: less training memory, slower steps")
    g.add_argument("--inference-steps", dest="num_inference_steps", type=int, metavar="N",
                   default=env.get("num_inference_steps"),  # a string default goes through type=int too
                   help="arc2face/ddpm: sampling steps (default 25 for arc2face, 50 for ddpm)")
    g.add_argument("--allow-downloads", action="store_true",
                   default=(env.get("allow_downloads") or "").lower() in ("1", "true", "yes"),
                   help="let --model-path, --base-model-path and --insightface-pack be Hugging Face hub ids, fetched "
                        "on start (also LEGATO_ALLOW_DOWNLOADS=1); off by default: nothing is downloaded")
    if judge:
        g.add_argument("--judge", choices=JUDGES,
                       help="network that scores the metrics, never one the backend trains with (default: embedded "
                            "for the embedded backend, dlib's face ResNet for arc2face/ddpm)")


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))


def _cmd_faceworld_sheet(args) -> int:
    from . import faceworld

    ids = [args.first_identity + i for i in range(args.identities) for _ in range(args.views)]
    views = [v for _ in range(args.identities) for v in range(args.views)]
    imgs = faceworld.render(ids, views, size=args.size)
    path = faceworld.save_png(faceworld.contact_sheet(imgs, rows=args.identities, upscale=args.upscale), args.out)
    print(f"wrote {path} ({args.identities} identities x {args.views} views, ids from {args.first_identity})")
    return 0


def _cmd_faces_detect(args) -> int:
    from .faces import detect_faces
    from .faces.preparation import choice_message
    from .images import open_image

    photo = open_image(args.image)
    faces = detect_faces(photo)
    if not faces:
        print(f"no face found in {Path(args.image).name} ({photo.width}x{photo.height} px)", file=sys.stderr)
        return 2
    report = {"image": str(args.image), "size": list(photo.size), "faces": [f.to_dict() for f in faces], "used": 0,
              "message": choice_message(faces, photo.width) or "1 face found."}
    if args.json:
        _print_json(report)
    else:
        for i, f in enumerate(faces):
            mark = "*" if i == 0 else " "
            print(f"{mark} face {i}: box {f.to_dict()['box']}, score {f.score:.3f}, {f.size:.0f} px")
        print(report["message"])
    return 0


def _cmd_identity_evaluate(args) -> int:
    from .faceworld.dataset import render_set, to_float
    from .identity import load_identity_model, verification_report
    from .ranges import check_evaluation_ids

    if not args.allow_dev_ids:
        check_evaluation_ids([args.first_identity])
    t0 = time.time()
    model = load_identity_model(args.model)
    imgs, labels = render_set(list(range(args.first_identity, args.first_identity + args.identities)), args.views,
                              first_view=args.first_view, progress=not args.json)
    rep = verification_report(model.embed(to_float(imgs)), labels, far=1e-3, threshold=model.threshold)
    out = {"model": args.model, "identities": args.identities, "views": args.views,
           "first_identity": args.first_identity, "roc_auc": rep["roc_auc"],
           "tar_at_far_1e-3": rep["tar_at_far_0.001"], "threshold": model.threshold,
           "tar_at_threshold": rep["tar_at_threshold"], "far_at_threshold": rep["far_at_threshold"],
           "genuine_pairs": rep["genuine_pairs"], "impostor_pairs": rep["impostor_pairs"],
           "seconds": round(time.time() - t0, 2)}
    if args.json:
        _print_json(out)
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")
    return 0


def _cmd_identity_sensitivity(args) -> int:
    from .identity import load_identity_model
    from .identity.sensitivity import factor_sensitivity
    from .ranges import check_evaluation_ids

    check_evaluation_ids([args.first_identity])
    model = load_identity_model(args.model)
    rows = factor_sensitivity(model, list(range(args.first_identity, args.first_identity + args.identities)))
    out = {"model": args.model, "identities": args.identities, "first_identity": args.first_identity,
           "threshold": model.threshold, "factors": rows}
    if args.json:
        _print_json(out)
    else:
        for r in rows:
            print(f"{r['factor']:>40}: mean {r['mean_cosine']:.3f}  min {r['min_cosine']:.3f}  "
                  f"same person {r['same_person_rate']:.2f}  ({r['faces']} faces)")
    return 0


def _load_backend(model: str | None = None):
    """The embedded backend (the shipped generator, or the one saved in ``model``), for the commands that only
    exist for it (generator evaluate / sheet)."""
    from .backends.embedded import EmbeddedFaceBackend

    return EmbeddedFaceBackend.from_pretrained(model)


def _cmd_generator_evaluate(args) -> int:
    from .generator.evaluation import evaluate_generator
    from .ranges import check_evaluation_ids

    if not args.allow_dev_ids:
        check_evaluation_ids([args.first_identity])
    backend = _load_backend(args.model_path)
    reference = None
    if (args.model_path is not None or args.reference is not None) and not args.no_reference:
        reference = _load_backend(args.reference)  # timed side by side: the shipped generator unless told
    t0 = time.time()
    rep = evaluate_generator(backend, args.identities, args.first_identity, progress=not args.json,
                             reference=reference)
    rep["seconds"] = round(time.time() - t0, 1)
    if reference is not None:
        rep["reference"] = args.reference or "assets/generator"
    _print_json(rep) if args.json else [print(f"{k:>28}: {v}") for k, v in rep.items()]
    return 0


def _cmd_generator_sheet(args) -> int:
    from . import faceworld

    backend = _load_backend(args.model_path)
    if args.thin_parts:
        from .faceworld.parts import identities_with_parts

        ids = identities_with_parts(args.first_identity, args.thin_parts)
    else:
        ids = list(range(args.first_identity, args.first_identity + args.identities))
    img = faceworld.render(ids, 0)
    w, v = backend.invert(img)
    cols = [img, backend.render(w, v)]
    with torch.no_grad():
        for k in range(1, args.views + 1):
            view = faceworld.sample_views(ids, [1000 + k] * len(ids))
            cols += [faceworld.render_faces(faceworld.sample_identities(ids), view),  # the truth of that view
                     backend.render(w, faceworld.encode_view(view))]
    grid = torch.stack(cols, 1).flatten(0, 1)
    faceworld.save_png(faceworld.contact_sheet(grid, rows=len(ids), upscale=2), args.out)
    print(f"wrote {args.out}: columns 1-2 a face-world image and its inversion, then for each new view the face "
          f"world's image of it and the inverted identity rendered in it; rows: identities {ids}")
    return 0


MAX_PHOTO_SIDE = 1024


def _read_image(path: str, backend) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] as the backend reads photos: the face detected once and aligned to its
    ``face_crop()`` (face-world framing at 64 px for the embedded one, ArcFace's template at the checkpoint's size
    for Arc2Face and DDPM), or the whole photo for a backend that finds faces itself (``reads_whole_photo``)."""
    from .faces import prepare_face
    from .images import open_image

    im = open_image(path)
    if not backend.reads_whole_photo:
        prepared = prepare_face(im, backend.face_crop())  # FaceError (a ValueError): one line, exit code 2
        if prepared.message:
            print(prepared.message, file=sys.stderr)
        return prepared.image[None]
    im.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE))  # insightface detects at 640 px: more only costs memory
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()[None]


def _check_identity_flag(args, spec) -> None:
    if getattr(args, "identity", None) is not None and spec.kind != "embedded":
        raise ValueError(f"--identity picks a face-world identity, which only the embedded backend can draw; give "
                         f"a photo with --image PATH for the {spec.kind} backend")


def _target_input(args, backend):
    """(latent, other_latents, other_views, description) for --image or --identity."""
    from . import faceworld

    if args.identity is not None:
        if args.identity < 0:
            raise SystemExit("--identity must be non-negative")
        img = faceworld.render([args.identity], 0)
        w, _ = backend.invert(img)
        others = faceworld.render([args.identity] * 5, [1, 2, 3, 4, 5])
        ow, ov = backend.invert(others)
        return w, ow, ov, {"identity": args.identity}
    img = _read_image(args.image, backend)
    w, _ = backend.invert(img)
    return w, None, None, {"image": str(args.image)}


def forget_config(args: argparse.Namespace) -> ForgetConfig:
    """The run's settings from ``forget``'s arguments: the defaults, then ``--config`` (a JSON file of ForgetConfig
    fields, e.g. an earlier session's settings), then the flags."""
    from .unlearning.engine import ForgetConfig

    cfg = ForgetConfig()
    if args.config:
        cfg = cfg.merged(json.loads(Path(args.config).read_text()))
    target = {k: v for k, v in (("kind", args.target), ("stop_similarity", args.stop_similarity)) if v is not KEEP}
    cfg = cfg.merged({"seed": args.seed, "target": target})
    if args.robust and cfg.robust is None:
        cfg = cfg.merged({"robust": {}})
    if args.steps:
        cfg.steps = args.steps
    if args.lr:
        cfg.lr = args.lr
    return cfg


def _cmd_forget(args) -> int:
    from tqdm.auto import tqdm

    from .backends.base import renders_fast
    from .metrics import AdapterKnob, dial_report, unlearning_report
    from .unlearning.engine import train_adapter

    spec = BackendSpec.from_args(args)
    _check_identity_flag(args, spec)
    if args.eval_samples is not None and args.eval_samples < 2:
        raise ValueError("--eval-samples must be at least 2")
    spec.check()
    judge_name = resolve_judge(args.judge, spec.kind, spec.insightface_pack)  # before any model loads
    torch.set_num_threads(args.threads)
    backend = spec.load()
    judge = spec.judge(backend, judge_name)  # refuses a judge that is one of the backend's training networks
    networks = check_judge_independent(backend, judge)
    t0 = time.time()
    w, ow, ov, desc = _target_input(args, backend)
    cfg = forget_config(args)
    bar = tqdm(total=cfg.steps, desc="forgetting", disable=args.quiet)
    res = train_adapter(backend, w, cfg, on_progress=lambda ev: bar.update(1))
    bar.close()
    seconds = time.time() - t0
    res.adapter.description.update(desc)
    res.adapter.save(args.out)
    knob = AdapterKnob(backend, [res.adapter])
    # at the slider's end (u = 1), where a dial that ends at the loss network's floor stops short of t_end
    rep = unlearning_report(backend, knob, w, res.adapter.t_at(1.0), ow, ov, judge=judge,
                            **backend.report_sizes(args.eval_samples))
    if renders_fast(backend):  # the slider as a user meets it (calibrated u), and the raw knob t = u T
        views = backend.canonical_views(8)
        rep["dial"] = dial_report(backend, knob, w, res.target_latent, res.adapter.t_at, views, judge)
        rep["dial_raw"] = dial_report(backend, knob, w, res.target_latent, lambda u: u * cfg.ode.t_max, views, judge,
                                      manifold_positions=())
        rep["dial_map"] = {"t": list(res.adapter.dial.t), "measured_by": res.adapter.dial.measured_by} \
            if res.adapter.dial is not None else None
    rep.update({"seconds": round(seconds, 2), "steps": cfg.steps, "seed": cfg.seed, "target": cfg.target.kind,
                "target_stop_fraction": res.adapter.description["target"].get("stop_fraction"),
                "robust": res.adapter.description.get("robust"),
                "adapter": str(args.out), "backend": spec.label(backend), "judge": judge_name,
                "judge_network": networks["judge"], "training_identity": networks["training_identity"], **desc})
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(rep, indent=2) + "\n")
    if not args.quiet:
        print(json.dumps({k: rep[k] for k in ("id_target", "id_others", "retention_mean", "retention_p5",
                                               "fd_judge", "seconds", "trainable_fraction") if k in rep}, indent=2))
    return 0


def _cmd_render(args) -> int:
    from . import faceworld
    from .adapters import ODEAdapter, active

    spec = BackendSpec.from_args(args)
    _check_identity_flag(args, spec)
    backend = spec.load()
    adapter = ODEAdapter.load(args.adapter, backend)
    if args.identity is not None:
        img = faceworld.render([args.identity], 0)
    else:
        img = _read_image(args.image, backend)
    w, v = backend.invert(img)
    views = torch.cat([v, backend.canonical_views(args.views)[1:]]) if args.views > 1 else v
    lat = w.expand(len(views), -1)
    t = adapter.t_at(args.u) if args.u is not None else args.t
    with torch.no_grad():
        before = backend.render(lat, views)
        with active(backend, [(adapter, t)]):
            after = backend.render(lat, views)
    upscale = max(1, 192 // before.shape[-1])  # 3x for the embedded 64 px renders, as before
    sheet = faceworld.contact_sheet(torch.cat([before, after]), rows=2, upscale=upscale)
    faceworld.save_png(sheet, args.out)
    at = f"u={args.u} (t={t:.4g})" if args.u is not None else f"t={t}"
    print(f"wrote {args.out}: top row t=0 (base), bottom row {at}")
    return 0


def _cmd_attack(args) -> int:
    from . import faceworld
    from .adapters import ODEAdapter
    from .attacks import AttackConfig, attack_suite
    from .backends.base import renders_fast
    from .metrics import AdapterKnob

    spec = BackendSpec.from_args(args)
    _check_identity_flag(args, spec)
    if args.steps < 1 or args.other_views < 0:
        raise ValueError("--steps must be at least 1 and --other-views at least 0")
    spec.check()
    judge_name = resolve_judge(args.judge, spec.kind, spec.insightface_pack)
    torch.set_num_threads(args.threads)
    backend = spec.load()
    if not renders_fast(backend):
        raise ValueError(f"attack runs hundreds of differentiable renders per photo; the {spec.kind} backend renders "
                         "by a full sampling loop, so attacks run on the embedded backend only for now")
    judge = spec.judge(backend, judge_name)
    check_judge_independent(backend, judge)
    adapter = ODEAdapter.load(args.adapter, backend)
    if args.identity is not None:
        photo = faceworld.render([args.identity], 0)
        n = args.other_views
        others = faceworld.render([args.identity] * n, list(range(1, n + 1))) if n else None
        source = {"identity": args.identity}
    else:
        photo = _read_image(args.image, backend)
        others = torch.cat([_read_image(p, backend) for p in args.other_image]) if args.other_image else None
        source = {"image": str(args.image), "other_images": [str(p) for p in args.other_image or []]}
    t = adapter.t_at(args.u) if args.t is None else args.t
    original = backend.invert(photo)  # the latent the engine forgot: the photo inverted into the base model
    progress = None if args.quiet else (lambda what: print(f"attack: {what}", file=sys.stderr))
    report = attack_suite(AdapterKnob(backend, [adapter]), t, photo, original, judge, others,
                          AttackConfig(steps=args.steps), progress=progress)
    report.update({"adapter": str(args.adapter), "t": t, "u": args.u, "judge": judge_name,
                   "backend": spec.label(backend), **source})
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    if not args.quiet or not args.json:
        print(text, end="")
    return 0


def _cmd_bench(args) -> int:
    from .baselines.benchmark import METHODS, default_config, run_benchmark, summarise, write_outputs
    from .ranges import check_evaluation_ids

    spec = BackendSpec.from_args(args)
    if spec.kind != "embedded":
        raise ValueError(f"--backend {spec.kind} is not supported by bench yet: the benchmark runs on the embedded "
                         "backend")
    if args.judge not in (None, "embedded"):
        raise ValueError(f"--judge {args.judge} is not supported by bench yet: the benchmark scores with the embedded "
                         "judge")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if not args.allow_dev_ids:
        check_evaluation_ids([args.first_identity])
    spec.check()
    torch.set_num_threads(args.threads)
    backend = spec.load()
    cfg = default_config(args.quick)
    if args.steps:
        cfg.steps = args.steps
    targets = args.targets if args.targets else (2 if args.quick else 5)
    ids = list(range(args.first_identity, args.first_identity + targets))
    t0 = time.time()
    bench = run_benchmark(backend, methods, ids, cfg, audit_steps=args.audit_steps if not args.quick else 50,
                          n_retain=100 if args.quick else 200, n_fd=200 if args.quick else 500,
                          work=Path(args.work) if args.work else None)
    bench["seconds"] = round(time.time() - t0, 1)
    bench["command"] = " ".join(["python -m legato_core", *sys.argv[1:]])
    paths = write_outputs(bench, Path(args.out))
    print(summarise(bench))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _id_range(text: str) -> list[int]:
    """'1000000-1000009' or '1000000,1000003' -> ids."""
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        ids += list(range(int(lo), int(hi or lo) + 1))
    return ids


def _cmd_forget_many(args) -> int:
    from .adapters.request_log import RequestLog
    from .unlearning.engine import ForgetConfig
    from .unlearning.many import Person, forget_many

    spec = BackendSpec.from_args(args)
    spec.check()
    torch.set_num_threads(args.threads)
    backend = spec.load()
    if bool(args.identities) == bool(args.images):
        raise ValueError("give --identities or --images (not both)")
    if args.identities:
        from . import faceworld

        inputs = [(f"identity {i}", faceworld.render([i], 0)) for i in _id_range(args.identities)]
    else:
        inputs = [(Path(p).name, _read_image(p, backend)) for p in args.images]
    people = [Person(label, backend.invert(img)[0]) for label, img in inputs]
    cfg = ForgetConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config else ForgetConfig()
    if args.steps:
        cfg.steps = args.steps
    log_path = Path(args.log)
    log = RequestLog.load(log_path, backend) if log_path.exists() else RequestLog.for_model(backend)

    def landed(done) -> None:
        log.save(log_path)  # after every request: a stream that stops keeps what it has
        if not args.quiet:
            print(f"{done.request.key} {done.request.label}: {done.seconds:.1f} s ({done.index + 1}/{done.total})")

    forget_many(backend, people, cfg, args.mode, log, landed)
    print(f"wrote {log_path} ({len(log)} requests)")
    return 0


def _cmd_requests(args) -> int:
    from .adapters.request_log import RequestLog

    log = RequestLog.load(args.log)
    if args.action == "remove":
        if not args.key:
            raise ValueError(f"remove needs --key, one of {log.keys()}")
        try:
            removed = log.remove(args.key)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        log.save(args.log)
        print(f"removed {removed.key} ({removed.label}); {len(log)} requests left in {args.log}")
        return 0
    rows = [{"key": r.key, "label": r.label, "u": r.u, "t": round(r.t, 4), "created": r.created,
             "scope": r.adapter.scope is not None} for r in log.requests]
    if args.json:
        _print_json({"base_model_id": log.base_model_id, "base_weight_hash": log.base_weight_hash, "requests": rows})
    else:
        print(f"{len(rows)} requests on {log.base_model_id} ({log.base_weight_hash})")
        for r in rows:
            print(f"  {r['key']}  u={r['u']:.3f}  {r['created']}  {r['label']}")
    return 0


def _cmd_bench_many(args) -> int:
    from .baselines.many_benchmark import ManyConfig, run_many

    spec = BackendSpec.from_args(args)
    if spec.kind != "embedded":
        raise ValueError(f"--backend {spec.kind} is not supported by bench-many: it runs on the embedded backend")
    torch.set_num_threads(args.threads)
    cfg = ManyConfig(ks=tuple(int(k) for k in args.k.split(",")), methods=tuple(args.methods.split(",")),
                     batch=not args.no_batch, sequential=not args.no_sequential, rescope=args.rescope,
                     first_identity=args.first_identity,
                     forget={"steps": args.steps} if args.steps else {})
    spec.check()
    backend = spec.load()
    command = " ".join(["python -m legato_core", *sys.argv[1:]])
    data = run_many(backend, cfg, args.out, args.work, command=command)
    data["commands"] = [c for c in data.get("commands", []) if c != command] + [command]
    from .baselines.many_benchmark import write_many_outputs

    paths = write_many_outputs(data, Path(args.out))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


KEEP = object()  # a flag not given: the config's value stands


def _stop_similarity(text: str) -> float | None:
    """--stop-similarity: a cosine TargetConfig accepts, or 'none'."""
    from .unlearning.targets import TargetConfig

    try:
        value = None if text == "none" else float(text)
        TargetConfig(stop_similarity=value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cosine in [-1, 1) or 'none', got {text!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    from .unlearning.engine import ForgetConfig
    from .unlearning.targets import TARGETS, TargetConfig

    ap = argparse.ArgumentParser(prog="legato", description="Continuous identity unlearning with Neural-ODE adapters")
    sub = ap.add_subparsers(dest="command", required=True)

    fw = sub.add_parser("faceworld", help="the procedural face world").add_subparsers(dest="action", required=True)
    sh = fw.add_parser("sheet", help="write a contact sheet PNG (rows: identities, columns: views)")
    sh.add_argument("--out", required=True)
    sh.add_argument("--identities", type=int, default=8)
    sh.add_argument("--views", type=int, default=6)
    sh.add_argument("--first-identity", type=int, default=1_000_000)
    sh.add_argument("--size", type=int, default=64)
    sh.add_argument("--upscale", type=int, default=2)
    sh.set_defaults(func=_cmd_faceworld_sheet)

    fcp = sub.add_parser("faces", help="face detection for uploads").add_subparsers(dest="action", required=True)
    fd = fcp.add_parser("detect", help="every face in a photo (box, score, 5 landmarks) and the one an upload uses; "
                                       "exit code 2 when there is none")
    fd.add_argument("--image", required=True, help="a photo (PNG, JPEG, WebP, ...)")
    fd.add_argument("--json", action="store_true", help="print JSON")
    fd.set_defaults(func=_cmd_faces_detect)

    idp = sub.add_parser("identity", help="identity networks").add_subparsers(dest="action", required=True)
    ev = idp.add_parser("evaluate", help="verification ROC-AUC / TAR@FAR=1e-3 on held-out identities")
    ev.add_argument("--model", choices=["arcface", "judge"], required=True)
    ev.add_argument("--identities", type=int, default=500)
    ev.add_argument("--views", type=int, default=10)
    ev.add_argument("--first-identity", type=int, default=1_000_000)
    ev.add_argument("--first-view", type=int, default=0)
    ev.add_argument("--allow-dev-ids", action="store_true", help="allow ids below 1,000,000 (not for reporting)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_identity_evaluate)
    se = idp.add_parser("sensitivity", help="cosine between a face and the same face with one factor changed")
    se.add_argument("--model", choices=["arcface", "judge"], required=True)
    se.add_argument("--identities", type=int, default=200)
    se.add_argument("--first-identity", type=int, default=1_000_000)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=_cmd_identity_sensitivity)

    gp = sub.add_parser("generator", help="the embedded generator").add_subparsers(dest="action", required=True)
    ge = gp.add_parser("evaluate", help="inversion, new views, prior distinctness/consistency, speed")
    ge.add_argument("--identities", type=int, default=200)
    ge.add_argument("--first-identity", type=int, default=1_000_000)
    ge.add_argument("--allow-dev-ids", action="store_true")
    ge.add_argument("--json", action="store_true")
    ge.add_argument("--model-path", metavar="PATH",
                    help="a saved embedded generator directory (default: the shipped assets/generator)")
    ge.add_argument("--no-reference", action="store_true",
                    help="with --model-path: skip timing the shipped generator's batch-of-8 render beside it")
    ge.add_argument("--reference", metavar="PATH",
                    help="time the batch-of-8 render beside this generator directory instead of the shipped one "
                         "(e.g. an earlier generator exported from git history)")
    ge.set_defaults(func=_cmd_generator_evaluate)
    gs = gp.add_parser("sheet", help="image | inversion | (truth, render) of new views of the inverted identity, "
                                     "one row per identity")
    gs.add_argument("--out", required=True)
    gs.add_argument("--identities", type=int, default=8)
    gs.add_argument("--views", type=int, default=3)
    gs.add_argument("--first-identity", type=int, default=1_000_000)
    gs.add_argument("--thin-parts", type=int, default=0, metavar="K",
                    help="rows: for each thin part (glasses, facial hair, mole, freckles) the first K identities "
                         "from --first-identity whose picture shows it, instead of --identities consecutive ones")
    gs.add_argument("--model-path", metavar="PATH",
                    help="a saved embedded generator directory (default: the shipped assets/generator)")
    gs.set_defaults(func=_cmd_generator_sheet)

    fg = sub.add_parser("forget", help="train an ODE adapter that forgets one identity")
    src = fg.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="a face image (PNG/JPEG)")
    src.add_argument("--identity", type=int, help="a face-world identity id")
    fg.add_argument("--out", required=True, help="adapter .safetensors to write")
    fg.add_argument("--report", help="JSON report to write")
    fg.add_argument("--steps", type=int, help=f"training steps (default {ForgetConfig.steps})")
    fg.add_argument("--seed", type=int, default=0)
    fg.add_argument("--lr", type=float)
    fg.add_argument("--config", help="JSON file of ForgetConfig fields laid over the defaults (nested objects for "
                                     "target, ode, weights, calibration); the flags below win over it")
    fg.add_argument("--target", choices=list(TARGETS), default=KEEP, help=f"default {TargetConfig.kind}")
    fg.add_argument("--stop-similarity", metavar="COS|none", type=_stop_similarity, default=KEEP,
                    help=f"the loss network's cosine to the person the target must fall to (default "
                         f"{TargetConfig.stop_similarity}): substitute, the most a prior face may resemble the person; "
                         f"extrapolated, where to stop on GUIDE's line ('none': a fixed distance)")
    fg.add_argument("--robust", action="store_true",
                    help="robust mode: every latent the base model draws as the person is forgotten too, so that "
                         "re-inverting their photo does not bring them back (docs/attacks.md)")
    fg.add_argument("--threads", type=int, default=2)
    fg.add_argument("--quiet", action="store_true")
    fg.add_argument("--eval-samples", type=int,
                    help="random identities for retention and fd_judge (default: 200/500 embedded, "
                         "32 for arc2face/ddpm, where each is a full sampling run)")
    add_backend_options(fg)
    fg.set_defaults(func=_cmd_forget)

    rp = sub.add_parser("render", help="render an identity through an adapter at a slider position u or time t")
    rp.add_argument("--adapter", required=True)
    at = rp.add_mutually_exclusive_group(required=True)
    at.add_argument("--u", type=float, help="slider position in [0, 1] (the adapter's calibrated dial: equal steps, "
                                            "equal identity change)")
    at.add_argument("--t", type=float, help="raw ODE integration time in [0, t_max] (the paper's knob)")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--identity", type=int)
    rp.add_argument("--views", type=int, default=4)
    rp.add_argument("--out", required=True)
    add_backend_options(rp, judge=False)
    rp.set_defaults(func=_cmd_render)
    ak = sub.add_parser("attack", help="try to bring a forgotten person back: invert their photos into the "
                                       "unlearned model (attacks a-d), beside the same attacks on the base model")
    ak.add_argument("--adapter", required=True)
    src = ak.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="the photo the adapter was trained on")
    src.add_argument("--identity", type=int, help="a face-world identity (its view 0 is the trained photo)")
    ak.add_argument("--other-image", action="append", metavar="PATH",
                    help="another photo of the person, never seen by the engine (attack b; repeat the flag)")
    ak.add_argument("--other-views", type=int, default=5,
                    help="with --identity: how many other face-world views of the person attack b inverts")
    at = ak.add_mutually_exclusive_group()
    at.add_argument("--u", type=float, default=1.0, help="slider position of the unlearned model (default 1)")
    at.add_argument("--t", type=float, help="raw ODE integration time instead of --u")
    ak.add_argument("--steps", type=int, default=200, help="refinement steps of each inversion attack")
    ak.add_argument("--threads", type=int, default=2)
    ak.add_argument("--json", metavar="PATH", help="write the report here (it is printed when this is absent)")
    ak.add_argument("--quiet", action="store_true")
    add_backend_options(ak)
    ak.set_defaults(func=_cmd_attack)
    bp = sub.add_parser("bench", help="LEGATO against GUIDE, SalUn, UNO, UNO-S and LoRA on held-out targets (and "
                                         "robust LEGATO and GUIDE: legato-robust, guide-robust)")
    bp.add_argument("--methods", default="legato,guide,salun,uno,uno-s,lora")
    bp.add_argument("--targets", type=int, help="number of target identities (default 5, quick 2)")
    bp.add_argument("--first-identity", type=int, default=1_000_000)
    bp.add_argument("--steps", type=int, help="equal step budget for every method")
    bp.add_argument("--audit-steps", type=int, default=200)
    bp.add_argument("--quick", action="store_true", help="2 targets, 40 steps, smaller metric samples")
    bp.add_argument("--threads", type=int, default=2)
    bp.add_argument("--allow-dev-ids", action="store_true")
    bp.add_argument("--out", required=True)
    bp.add_argument("--work", help="keep each (method, target) record here as it finishes; a rerun resumes")
    add_backend_options(bp)
    bp.set_defaults(func=_cmd_bench)

    fm = sub.add_parser("forget-many", help="forget many people into one request log (the model after requests "
                                            "1..k); an existing log is appended to")
    fm.add_argument("--identities", help="face-world ids, e.g. 1000000-1000009 or 1000000,1000004")
    fm.add_argument("--images", nargs="+", help="face images (PNG/JPEG), one person each")
    fm.add_argument("--log", required=True, help="request log .safetensors (created, or appended to)")
    fm.add_argument("--mode", choices=("sequential", "batch"), default="sequential",
                    help="sequential: one request after another; batch: one run, substitutes chosen together")
    fm.add_argument("--steps", type=int, help="training steps per person (default 250)")
    fm.add_argument("--config", help="JSON file of ForgetConfig fields laid over the defaults")
    fm.add_argument("--threads", type=int, default=2)
    fm.add_argument("--quiet", action="store_true")
    add_backend_options(fm, judge=False)
    fm.set_defaults(func=_cmd_forget_many)

    rq = sub.add_parser("requests", help="list the requests of a request log, or remove one (exactly the model "
                                         "without it)")
    rq.add_argument("action", choices=("list", "remove"))
    rq.add_argument("--log", required=True)
    rq.add_argument("--key", help="remove: the request's key (see list)")
    rq.add_argument("--json", action="store_true")
    rq.set_defaults(func=_cmd_requests)

    bm = sub.add_parser("bench-many", help="many people: k forgotten one after another or at once, LEGATO against "
                                           "GUIDE sequential and composed LoRA (docs/many)")
    bm.add_argument("--k", default="1,10,50,100", help="the k's to score at (comma separated)")
    bm.add_argument("--methods", default="legato,legato-composed,lora,guide")
    bm.add_argument("--no-batch", action="store_true", help="skip LEGATO's batch mode")
    bm.add_argument("--no-sequential", action="store_true", help="skip LEGATO's sequential mode")
    bm.add_argument("--rescope", action="store_true",
                    help="give the LEGATO adapters already trained in --work today's scope before scoring them")
    bm.add_argument("--first-identity", type=int, default=1_000_000)
    bm.add_argument("--steps", type=int, help="training steps per request (default: the engine's 250)")
    bm.add_argument("--threads", type=int, default=2)
    bm.add_argument("--work", default="runs/many", help="checkpoints (per request): a rerun resumes from here")
    bm.add_argument("--out", default="docs/many")
    add_backend_options(bm, judge=False)
    bm.set_defaults(func=_cmd_bench_many)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
