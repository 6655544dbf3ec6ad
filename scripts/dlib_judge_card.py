"""Measure the dlib judge on the real photos available offline and write its model card (docs/dlib_judge.md).

    python scripts/dlib_judge_card.py            # writes docs/dlib_judge.md and prints the figures as JSON

Faces: skimage's astronaut (public domain) and the people of insightface's t1.jpg (read from the installed packages,
never copied into the repository). Same person = an edited copy of one face crop (crop/zoom, mirror, brightness,
blur, JPEG q30) against the unedited crop; different people = every pair of crops (edited or not) of two different
faces. No person appears in two different photos offline, so "other photos of the same person" is not measured.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.identity.dlib_judge import DlibFaceJudge  # noqa: E402
from legato_core.identity.dlib_resnet import SAME_PERSON_DISTANCE  # noqa: E402

COMMAND = "python scripts/dlib_judge_card.py"
EDITS = {
    "crop/zoom": lambda im: im.crop((im.width // 12, im.height // 16, im.width - im.width // 20,
                                     im.height - im.height // 10)).resize(im.size),
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "brightness x1.3": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "gaussian blur r=2": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "JPEG q30": lambda im: _jpeg(im, 30),
}


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert("RGB")


def face_crops(judge: DlibFaceJudge) -> dict[str, Image.Image]:
    """One crop per person: the astronaut photo, and each face dlib finds in t1.jpg with a margin of 60% of its box."""
    from skimage.data import astronaut

    crops = {"astronaut": Image.fromarray(astronaut())}
    spec = importlib.util.find_spec("insightface")
    t1 = np.asarray(Image.open(Path(spec.origin).parent / "data" / "images" / "t1.jpg").convert("RGB"))
    rects = sorted(judge.aligner.detector(t1, 1), key=lambda r: r.left())
    for i, r in enumerate(rects):
        m = int(0.6 * r.width())
        box = (max(0, r.left() - m), max(0, r.top() - m), min(t1.shape[1], r.right() + m),
               min(t1.shape[0], r.bottom() + m))
        crops[f"t1 person {i + 1}"] = Image.fromarray(t1).crop(box)
    return crops


def _tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def measure() -> dict:
    judge = DlibFaceJudge()
    crops = face_crops(judge)
    desc, missing = {}, []
    t0 = time.perf_counter()
    for person, im in crops.items():
        for edit, fn in {"original": lambda x: x, **EDITS}.items():
            e = judge.embed(_tensor(fn(im)))
            if judge.last_missing:
                missing.append(f"{person} / {edit}")
                continue
            desc[(person, edit)] = e[0]
    seconds = (time.perf_counter() - t0) / (len(crops) * (1 + len(EDITS)))
    same = {edit: [] for edit in EDITS}
    for (person, edit), e in desc.items():
        if edit != "original" and (person, "original") in desc:
            same[edit].append(float((e - desc[(person, "original")]).norm()))
    diff, cos_diff = [], []
    for (ka, a), (kb, b) in itertools.combinations(desc.items(), 2):
        if ka[0] != kb[0]:
            diff.append(float((a - b).norm()))
            cos_diff.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    same_all = [d for v in same.values() for d in v]
    cos_same = [float(torch.nn.functional.cosine_similarity(e, desc[(p, "original")], dim=0))
                for (p, ed), e in desc.items() if ed != "original" and (p, "original") in desc]
    thr = SAME_PERSON_DISTANCE
    return {
        "people": list(crops), "images": len(desc), "missing_faces": missing,
        "same_person": {k: [round(min(v), 3), round(max(v), 3), len(v)] for k, v in same.items() if v},
        "same_person_all": [round(min(same_all), 3), round(float(np.median(same_all)), 3), round(max(same_all), 3),
                            len(same_all)],
        "different_people": [round(min(diff), 3), round(float(np.median(diff)), 3), round(max(diff), 3), len(diff)],
        "cosine_same": [round(min(cos_same), 3), round(max(cos_same), 3)],
        "cosine_different": [round(min(cos_diff), 3), round(max(cos_diff), 3)],
        "same_accepted_at_0.6": sum(d < thr for d in same_all),
        "different_rejected_at_0.6": sum(d >= thr for d in diff),
        "descriptor_norm": [round(min(float(e.norm()) for e in desc.values()), 3),
                            round(max(float(e.norm()) for e in desc.values()), 3)],
        "seconds_per_image": round(seconds, 3), "torch_threads": torch.get_num_threads(),
    }


def card(m: dict) -> str:
    rows = "\n".join(f"| same person: {edit} | {v[0]:.3f} – {v[1]:.3f} | {v[2]} |"
                     for edit, v in m["same_person"].items())
    s, d = m["same_person_all"], m["different_people"]
    no_face = "; no face found in: " + ", ".join(m["missing_faces"]) if m["missing_faces"] else ""
    return f"""# dlib face ResNet judge (`--judge dlib`)

The real-face **judge** of the diffusers backends (arc2face, ddpm): it scores metrics only and is never the network
a backend trains or is conditioned with (`check_judge_independent` refuses that; reports name both in `judge_network`
and `training_identity`). Code: `legato_core/identity/dlib_resnet.py` (reader + torch port),
`legato_core/identity/dlib_judge.py` (alignment, similarity, optional differentiable identity loss).

## What it is
- dlib's `dlib_face_recognition_resnet_model_v1` (ResNet with 29 conv layers, 5.6 M parameters, 150 x 150 aligned
  chips -> 128-d descriptor), read in plain Python from the `.dat` shipped by the `face-recognition-models` 0.3.0
  package and rebuilt as a torch module; the converted weights are cached as safetensors in the user cache
  (`$LEGATO_CACHE_DIR`, else `~/.cache/legato/dlib_resnet_v1.safetensors`), never in the repository.
- The port reproduces dlib's own descriptor within 1e-5 (2.7e-7 measured on the astronaut chip;
  `tests/test_dlib_judge.py::test_port_reproduces_dlibs_descriptor_on_aligned_chips` checks it against `dlib-bin`),
  and gives gradients (`DlibFaceJudge.identity_loss`).
- Faces are found and aligned as dlib's `compute_face_descriptor` does: HOG frontal detector (upsample 1), the
  5-point landmark model from the same package, a 150 x 150 chip with padding 0.25 (reproduced as a torch warp).
  Images where dlib finds no face score 0.

## Similarity scale (not a cosine)
dlib compares descriptors by **Euclidean distance**; same person below {SAME_PERSON_DISTANCE}. The judge reports
`similarity = 1 - distance` and `threshold = 0.4` (= distance 0.6): 1 for identical images, lower for other people.
Cosine is useless here: descriptors have norms {m['descriptor_norm'][0]}–{m['descriptor_norm'][1]}, and the cosine
between *different* people measured {m['cosine_different'][0]}–{m['cosine_different'][1]} (same person
{m['cosine_same'][0]}–{m['cosine_same'][1]}).

## Measured on offline photos
`{COMMAND}` (CPU, {m['torch_threads']} torch threads). People: {", ".join(m['people'])}
({m['images']} images with a detected face{no_face}).
Euclidean distances:

| pairs | distance (min – max) | n |
|---|---|---|
{rows}
| same person, all edits (min / median / max) | {s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f} | {s[3]} |
| different people (min / median / max) | {d[0]:.3f} / {d[1]:.3f} / {d[2]:.3f} | {d[3]} |

At dlib's threshold 0.6: {m['same_accepted_at_0.6']} of {s[3]} same-person pairs accepted,
{m['different_rejected_at_0.6']} of {d[3]} different-people pairs rejected. {m['seconds_per_image']} s per image
(detection + landmarks + descriptor).

Limits: edited copies of one photo are much easier than other photos of the same person (pose, age, lighting),
which no offline data set here provides (dlib's author reports 99.38% on LFW for this model; not measured
here). The HOG detector misses profile and small faces (see the `faces` detection step for uploads).

## Licence and data
- Model files: `face-recognition-models` 0.3.0, released under **CC0** by its author (the package's 68-point
  landmark model is non-commercial and is not used here).
- dlib (`dlib-bin` 20.0.1.post1, a prebuilt repackaging of dlib): Boost Software License.
- Training data (per dlib's author): about 3 million faces of about 7,500 people from FaceScrub, the VGG-Face
  data set and web photos.
  Those data sets carry **non-commercial / research-only terms**; check them before commercial use of scores.
- The photos above are loaded from installed packages at measurement time (skimage's astronaut: public domain;
  insightface's t1.jpg: copyright unclear) and are not part of this repository.
"""


def main() -> int:
    torch.set_num_threads(2)
    m = measure()
    (ROOT / "docs" / "dlib_judge.md").write_text(card(m))
    print(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
