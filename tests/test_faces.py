"""Face handling for uploads (legato_core.faces): offline MTCNN detection on real photos, 5-point alignment onto a
backend's template, the upload rules and their messages, the studio's upload path and the CLI.

The real photos come from installed packages and are never committed: scikit-image's ``astronaut()``,
``camera()`` and ``coffee()``, and insightface 2.1's ``t1.jpg`` (six people)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from legato_core import faceworld
from legato_core.faces import (
    FaceCrop,
    NoFaceError,
    TinyFaceError,
    align_face,
    detect_faces,
    faceworld_template,
    prepare_face,
)
from legato_core.faces.alignment import similarity_transform, transform_points
from legato_core.faces.detection import box_iou, nms
from legato_core.images import to_pil, to_tensor

skdata = pytest.importorskip("skimage.data", reason="scikit-image (installed with insightface) ships the photos")

# The astronaut's face, annotated by hand on a 4x zoom of skimage.data.astronaut(): cheek to cheek at eye level
# (x 182-271), chin at y 178; top: one brow-to-nose-base distance (41 px) above the brows (y 89), i.e. the
# forehead under the fringe, as face-box conventions (WIDER FACE) include the forehead.
ASTRONAUT_FACE = (182.0, 48.0, 271.0, 178.0)
# The cameraman's face (near profile, looking into the camera) in skimage.data.camera(), by hand.
CAMERAMAN_FACE = (195.0, 115.0, 255.0, 195.0)


def _photo(name: str) -> Image.Image:
    arr = getattr(skdata, name)()
    return Image.fromarray(arr).convert("RGB")


def _t1() -> Image.Image:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface is not installed (requirements-backends.txt): t1.jpg comes with it")
    path = Path(spec.submodule_search_locations[0]) / "data" / "images" / "t1.jpg"
    if not path.exists():
        pytest.skip(f"{path} is not in this insightface version")
    return Image.open(path).convert("RGB")


def _iou(a, b) -> float:
    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


# -- detection ------------------------------------------------------------------------------------------------------
def test_the_astronaut_has_one_face_where_it_was_annotated_by_hand():
    faces = detect_faces(_photo("astronaut"))
    assert len(faces) == 1
    face = faces[0]
    iou = _iou(face.box, ASTRONAUT_FACE)
    print(f"astronaut: box {[round(v, 1) for v in face.box]}, score {face.score:.4f}, IoU {iou:.3f} with the hand box")
    assert iou >= 0.8
    assert face.score > 0.99
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    x1, y1, x2, y2 = face.box
    assert all(x1 < x < x2 and y1 < y < y2 for x, y in face.landmarks)
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_the_cameraman_is_found_although_he_is_near_profile():
    faces = detect_faces(_photo("camera"))  # grey photo: converted to RGB
    assert len(faces) == 1
    cx, cy = (faces[0].box[0] + faces[0].box[2]) / 2, (faces[0].box[1] + faces[0].box[3]) / 2
    x1, y1, x2, y2 = CAMERAMAN_FACE
    assert x1 < cx < x2 and y1 < cy < y2
    assert _iou(faces[0].box, CAMERAMAN_FACE) > 0.5


def test_six_people_are_found_in_insightfaces_group_photo_largest_first():
    faces = detect_faces(_t1())
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert max(_iou(a.box, b.box) for i, a in enumerate(faces) for b in faces[i + 1:]) < 0.1  # six distinct faces


def test_photos_without_faces_give_no_detection():
    assert detect_faces(_photo("coffee")) == []
    ramp = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))
    assert detect_faces(ramp) == []


def test_nms_keeps_the_best_of_overlapping_boxes_and_min_mode_drops_nested_ones():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # box 0 overlaps box 1 (IoU 0.68); box 3 is small
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]  # box 3 lies inside box 1


# -- alignment ------------------------------------------------------------------------------------------------------
def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = np.deg2rad(17.0)
    m_true = np.array([[np.cos(a), -np.sin(a), 12.0], [np.sin(a), np.cos(a), -4.0]]) * np.array([[0.7], [0.7]])
    m_true[:, 2] = [12.0, -4.0]
    dst = transform_points(m_true, src)
    np.testing.assert_allclose(similarity_transform(src, dst), m_true, atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), dst)


def test_aligned_crop_puts_the_landmarks_on_the_template():
    """Five bright dots at rotated, scaled 'landmark' positions in a photo land on the template in the crop."""
    crop = FaceCrop.arcface(112)
    a, s, t = np.deg2rad(-25.0), 2.6, np.array([140.0, 90.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    landmarks = crop.template @ (s * rot).T + t  # where the face's points are in the 'photo'
    photo = torch.zeros(3, 480, 520)
    yy, xx = torch.meshgrid(torch.arange(480) + 0.5, torch.arange(520) + 0.5, indexing="ij")
    for x, y in landmarks:
        photo += torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2))
    image, m = align_face(photo.clamp(0, 1), landmarks, crop)
    np.testing.assert_allclose(transform_points(m, landmarks), crop.template, atol=1e-4)
    grey = image[0].numpy()
    for x, y in crop.template:  # the brightest pixel near each template point is that point
        x0, y0 = int(x) - 6, int(y) - 6
        win = grey[y0:y0 + 13, x0:x0 + 13]
        py, px = np.unravel_index(win.argmax(), win.shape)
        assert abs(x0 + px + 0.5 - x) <= 1.0 and abs(y0 + py + 0.5 - y) <= 1.0


def test_a_real_face_aligned_to_the_face_world_has_its_landmarks_on_the_face_world_template():
    photo = _photo("astronaut")
    prepared = prepare_face(photo, FaceCrop.faceworld(64))
    assert prepared.aligned and prepared.used == 0 and prepared.image.shape == (3, 64, 64)
    moved = transform_points(prepared.transform, prepared.faces[0].landmarks)
    err = np.linalg.norm(moved - faceworld_template(64), axis=1)
    print(f"astronaut -> face-world template: landmark residuals {np.round(err, 2)} px (64-px crop)")
    assert err.max() < 3.0  # real and drawn proportions differ a little; a similarity cannot fit them exactly
    # and the detector, run again on the aligned crop at 4x, finds the face where the template says
    again = detect_faces(to_pil(prepared.image).resize((256, 256), Image.BICUBIC))
    assert len(again) == 1
    eyes = again[0].landmarks[:2] / 4
    assert np.linalg.norm(eyes - faceworld_template(64)[:2], axis=1).max() < 3.0


def test_the_face_world_template_sits_on_the_eyes_the_renderer_draws():
    """Where the detector fires on frontal face-world renders, its eye landmarks agree with the template."""
    size = 256
    renders = faceworld.render(list(range(200_001, 200_031)), 0, size=size, frontal=True)
    eyes = [f[0].landmarks[:2] for f in map(detect_faces, renders) if f]
    assert len(eyes) >= 10
    err = np.linalg.norm(np.stack(eyes) - faceworld_template(size)[:2], axis=2)
    assert err.mean() < 0.03 * size


# -- the upload rules -----------------------------------------------------------------------------------------------
def test_several_faces_message_says_how_many_and_which_one_was_used():
    photo = _t1()
    prepared = prepare_face(photo, FaceCrop.faceworld(64))
    assert prepared.message == "6 faces found; using the largest, at left."
    assert prepared.used == 0 and prepared.aligned
    assert prepared.faces[0].box[2] < photo.width / 3  # the largest face really is at left


def test_no_face_is_refused_with_a_clear_message():
    for photo in (_photo("coffee"), Image.new("RGB", (300, 200), (120, 130, 140))):
        with pytest.raises(NoFaceError, match=r"No face found in this image \(\d+x\d+ px\).*at least 40 px"):
            prepare_face(photo, FaceCrop.faceworld(64))


def test_a_tiny_face_is_refused_with_the_minimum_size():
    small = _photo("astronaut").resize((128, 128), Image.LANCZOS)  # the face is now about 22 px
    assert len(detect_faces(small)) == 1
    with pytest.raises(TinyFaceError, match=r"only \d+ px across; faces need at least 40 px"):
        prepare_face(small, FaceCrop.arcface(112))


def test_a_square_image_without_a_face_is_used_as_it_is():
    plain = Image.new("RGB", (96, 96), (200, 180, 160))
    prepared = prepare_face(plain, FaceCrop.faceworld(64))
    assert not prepared.aligned and prepared.used is None and "used as it is" in prepared.message
    torch.testing.assert_close(prepared.image, to_tensor(plain, 64))


@pytest.mark.parametrize("size", [64, 256])
def test_face_world_renders_are_used_as_they_are_whether_or_not_the_detector_fires(size):
    renders = faceworld.render(list(range(200_001, 200_041)), 0, size=size)
    fired = 0
    for img in renders:
        pil = to_pil(img)
        prepared = prepare_face(pil, FaceCrop.faceworld(64))
        fired += bool(prepared.faces)
        assert not prepared.aligned, prepared.message
        torch.testing.assert_close(prepared.image, to_tensor(pil, 64))
    print(f"{size} px face-world renders: the detector fired on {fired}/40")
    assert 0 < fired < 40  # both paths were taken


def test_annotated_preview_draws_the_box_of_the_face_used():
    photo = _photo("astronaut")
    prepared = prepare_face(photo, FaceCrop.faceworld(64))
    preview = np.asarray(prepared.annotated(photo, max_side=256), dtype=int)
    assert preview.shape == (256, 256, 3)
    x1, y1, _, y2 = (round(v / 2) for v in prepared.faces[0].box)
    edge = preview[y1 + 5:y2 - 5, x1]  # the left edge of the drawn box is green
    assert (edge[:, 1] > 180).all() and (edge[:, 0] < 100).all()


# -- the studio's upload path and the CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio():
    from legato_core.studio import JobQueue, Resources, Studio

    try:
        from legato_core.backends.embedded import EmbeddedFaceBackend

        backend = EmbeddedFaceBackend.from_pretrained(refine_steps=0)  # inversion quality is not under test here
    except FileNotFoundError as e:
        pytest.skip(f"trained weights are missing: {e}")
    s = Studio(Resources(backend, curve_retained=2), JobQueue(1), slider_step=None, max_identities=20)
    yield s
    s.close()


def test_embedded_backend_declares_the_face_world_crop(studio):
    crop = studio.res.base.face_crop()
    assert crop.size == 64 and crop.name == "face-world framing"
    np.testing.assert_allclose(crop.template, faceworld_template(64))
    assert studio.res.face_crop.name == crop.name


def test_uploading_a_real_photo_aligns_its_face(studio, tmp_path):
    path = tmp_path / "astronaut.png"
    _photo("astronaut").save(path)
    entry = studio.add_image(path)
    assert entry.face.aligned and entry.face.message == ""
    assert _iou(entry.face.faces[0].box, ASTRONAUT_FACE) >= 0.8
    np.testing.assert_array_equal(np.asarray(entry.source), np.asarray(to_pil(entry.face.image)))
    assert entry.face_preview.size == (256, 256)


def test_uploads_with_several_faces_or_none_get_their_messages(studio, tmp_path):
    from legato_core.studio import StudioError

    entry = studio.add_image(_t1(), name="t1.jpg")
    assert entry.face.message == "6 faces found; using the largest, at left."
    n = len(studio.entries)
    with pytest.raises(StudioError, match="No face found"):
        studio.add_image(_photo("coffee"), name="coffee")
    assert len(studio.entries) == n


def test_cli_faces_detect_prints_every_face_and_exits_2_without_one(tmp_path, capsys):
    from legato_core.cli import main

    astro, coffee = tmp_path / "astronaut.png", tmp_path / "coffee.png"
    _photo("astronaut").save(astro)
    _photo("coffee").save(coffee)
    assert main(["faces", "detect", "--image", str(astro), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["used"] == 0 and len(report["faces"]) == 1 and report["size"] == [512, 512]
    face = report["faces"][0]
    assert _iou(face["box"], ASTRONAUT_FACE) >= 0.8 and face["score"] > 0.99
    assert list(face["landmarks"]) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert main(["faces", "detect", "--image", str(coffee), "--json"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == "no face found in coffee.png (600x400 px)"


def test_cli_forget_reads_an_image_through_face_handling(tmp_path, embedded):
    from legato_core.cli import _read_image

    astro, coffee = tmp_path / "astronaut.png", tmp_path / "coffee.png"
    _photo("astronaut").save(astro)
    _photo("coffee").save(coffee)
    img = _read_image(str(astro), embedded)  # the embedded backend reads aligned face-world crops
    torch.testing.assert_close(img[0], prepare_face(_photo("astronaut"), FaceCrop.faceworld(64)).image)
    with pytest.raises(NoFaceError, match="No face found"):
        _read_image(str(coffee), embedded)
