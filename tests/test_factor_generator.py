"""The factor-conditioned generator: its conditioning vector, face-frame coordinates, resumable training, and
the pixel figures it is judged by."""

import json
import shutil
from dataclasses import asdict

import pytest
import torch

from legato_core import faceworld
from legato_core.backends.embedded import EmbeddedFaceBackend
from legato_core.faceworld.factors import FACTOR_DIM, identity_vector
from legato_core.faceworld.landmarks import LANDMARKS, face_landmarks
from legato_core.faceworld.parts import THIN_PARTS
from legato_core.generator.discriminator import PatchDiscriminator, discriminator_loss, generator_adversarial_loss
from legato_core.generator.evaluation import (
    central_crop,
    gradient_energy,
    high_frequency_energy,
    pixel_fidelity,
    render_times_side_by_side,
)
from legato_core.generator.factor_training import (
    FACTOR_INVERSION,
    FactorTrainingConfig,
    detail_mask,
    feature_loss,
    feature_mask,
    image_loss,
    initialise_from,
    landmark_loss,
    learning_rate,
    package_generator,
    train_factor_generator,
    training_batch,
)
from legato_core.generator.modeling import (
    GeneratorConfig,
    StyleFaceGenerator,
    face_frame_features,
    face_frame_xy,
    landmark_features,
)
from legato_core.generator.view_encoder import ViewEncoder
from legato_core.identity.model import IdentityModel


def tiny_factor_config(layout: int = 0) -> GeneratorConfig:
    return GeneratorConfig(embedding_dim=FACTOR_DIM, conditioning="factors", coord_octaves=2, w_dim=32,
                           view_code_dim=16, mapping_layers=2, channels={4: 32, 8: 16, 16: 8, 32: 8, 64: 4},
                           layout_landmarks=layout)


def _image_position(view: torch.Tensor, xy: torch.Tensor, size: int) -> tuple[int, int]:
    """Pixel (row, col) of a face-frame point: roll, scale and shift applied again."""
    v = faceworld.decode_view(view)
    cr, sr = torch.cos(v["roll"]).item(), torch.sin(v["roll"]).item()
    x, y = xy.tolist()
    gx = (cr * x - sr * y) * v["scale"].item() + v["shift_x"].item()
    gy = (sr * x + cr * y) * v["scale"].item() + v["shift_y"].item()
    return int((gy + 1) / 2 * size), int((gx + 1) / 2 * size)


def test_landmarks_sit_on_the_parts_the_face_world_draws_there():
    ids = list(range(300_000, 300_016))
    ident, view = faceworld.sample_identities(ids), faceworld.sample_views(ids, list(range(16)))
    lm = face_landmarks(ident, view)
    assert lm.shape == (16, len(LANDMARKS), 2)
    images = faceworld.render_faces(ident, view, size=256)
    views = faceworld.encode_view(view)
    pupils = mouths = 0
    for i in range(16):
        r, c = _image_position(views[i:i + 1], lm[i, LANDMARKS.index("iris_left")], 256)
        pupils += bool(images[i, :, r, c].max() < 0.35)  # the pupil is near black (0.03 before shading)
        r, c = _image_position(views[i:i + 1], lm[i, LANDMARKS.index("mouth")], 256)
        lip = ident["lip_color"][i]
        mouths += bool((images[i, :, r, c] / images[i, :, r, c].sum() - lip / lip.sum()).abs().max() < 0.08)
    assert pupils >= 14 and mouths >= 14  # eyes shut by a blink or lips hidden by a beard may miss
    # moving the eyes apart moves the eye landmarks apart and leaves the mouth where it was
    wider = face_landmarks(dict(ident, eye_spacing=ident["eye_spacing"] + 0.03), view)
    eyes = [LANDMARKS.index("eye_left"), LANDMARKS.index("eye_right")]
    gap = lambda m: (m[:, eyes[1]] - m[:, eyes[0]]).norm(dim=1)  # noqa: E731
    assert (gap(wider) > gap(lm) + 0.02).all()
    assert torch.allclose(wider[:, LANDMARKS.index("mouth")], lm[:, LANDMARKS.index("mouth")])


def test_landmark_features_are_small_offsets_and_a_bump_at_the_landmark():
    view = faceworld.encode_view(faceworld.frontal_view(1))
    xy = face_frame_xy(view, 64)
    landmark = torch.stack([xy[0][0, 20, 40], xy[1][0, 20, 40]]).view(1, 1, 2)
    feats = landmark_features(xy, landmark, scale=8.0)
    assert feats.shape == (1, 5, 64, 64)
    assert feats[0, 4].argmax().item() == 20 * 64 + 40  # the bump peaks on the landmark's pixel
    assert feats[0, 0, 20, 40].abs() < 1e-5 and feats[0, 0, 20, 63] > 0.9 and feats[0, 0, 20, 0] < -0.9
    assert feats.abs().max() <= 1.0


def test_a_layout_head_starts_where_the_generator_without_it_was_and_learns_landmarks(tmp_path, one_thread):
    cfg = FactorTrainingConfig(steps=2, batch_size=2, checkpoint_every=2, eval_every=2, eval_images=2,
                               prior_samples=16, generator=tiny_factor_config().__dict__)
    plain = train_factor_generator(cfg, tmp_path / "plain", log=lambda m: None)
    torch.manual_seed(0)
    layout = StyleFaceGenerator(tiny_factor_config(layout=len(LANDMARKS))).eval()
    origin = initialise_from(layout, tmp_path / "plain")
    assert origin["step"] == 2 and origin["new_parameters"] > 0
    f, v, _ = training_batch(0, 3, seed=0)
    with torch.no_grad():
        assert torch.equal(plain.render(plain.map_identity(f), v), layout.render(layout.map_identity(f), v))
    with pytest.raises(ValueError, match="has weights this generator does not"):
        initialise_from(StyleFaceGenerator(GeneratorConfig(embedding_dim=FACTOR_DIM, conditioning="factors",
                                                           w_dim=32, view_code_dim=16, mapping_layers=2,
                                                           channels={4: 32, 8: 16, 16: 8, 32: 8, 64: 4})),
                        tmp_path / "plain")
    grown = FactorTrainingConfig(**{**cfg.__dict__, "steps": 60, "eval_every": 60, "lr": 3e-3,
                                    "generator": tiny_factor_config(layout=len(LANDMARKS)).__dict__})
    trained = train_factor_generator(grown, tmp_path / "layout", log=lambda m: None, init_from=tmp_path / "plain")
    state = json.loads((tmp_path / "layout" / "state.json").read_text())
    assert state["init_from"]["step"] == 2 and "landmark_error_px" in state["history"][-1]
    f, v, _, truth = training_batch(999, 16, seed=3, landmarks=True)
    with torch.no_grad():
        before = landmark_loss(layout, layout.map_identity(f), v, truth)
        after = landmark_loss(trained, trained.map_identity(f), v, truth)
    assert after < 0.6 * before


def test_factor_vectors_are_bounded_one_hot_and_drop_what_is_not_drawn():
    ids = list(range(300_000, 300_200))
    ident = faceworld.sample_identities(ids)
    vec = identity_vector(ident)
    assert vec.shape == (200, FACTOR_DIM)
    assert vec.abs().max() <= 1.0 + 1e-6
    onehots = vec[:, -14:]
    assert torch.equal(onehots.sum(1), torch.full((200,), 3.0))  # hair style, facial hair, glasses
    no_mole = ident["mole"] == 0
    assert no_mole.any() and (no_mole.logical_not()).any()
    # a mole's position is zeroed when there is no mole, and kept when there is one
    different_position = dict(ident, mole_x=ident["mole_x"] * 0 + 0.2)
    moved = identity_vector(different_position)
    assert torch.equal(moved[no_mole], vec[no_mole])
    assert not torch.equal(moved[~no_mole], vec[~no_mole])


def test_face_frame_coordinates_follow_the_views_shift():
    centred = faceworld.encode_view(faceworld.frontal_view(1))
    shifted = centred.clone()
    k = list(faceworld.VIEW_RANGES).index("shift_x")
    k = sum(faceworld.VIEW_RANGES[n][2] for n in list(faceworld.VIEW_RANGES)[:k])
    shifted[0, k] = 1.0  # the face moves right by 0.07 image units
    a, b = face_frame_features(centred, 64, 2), face_frame_features(shifted, 64, 2)
    assert a.shape == (1, 2 + 8, 64, 64)
    scale = faceworld.decode_view(centred)["scale"].item()
    assert torch.allclose(a[0, 0] - b[0, 0], torch.full((64, 64), 0.07 / scale), atol=1e-5)


def test_factor_generator_renders_any_face_world_person_and_samples_real_ones():
    torch.manual_seed(0)
    g = StyleFaceGenerator(tiny_factor_config()).eval()
    f, v, _ = training_batch(0, 3, seed=0)
    img = g.render(g.map_identity(f), v)
    assert img.shape == (3, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
    prior = g.sample_embeddings(4, torch.Generator().manual_seed(1))
    assert prior.shape == (4, FACTOR_DIM)
    assert torch.equal(prior[:, -14:].sum(1), torch.full((4,), 3.0))  # whole categories, never blends
    assert list(g.adapter_sites) == ["w", "b8", "b16", "b32", "b64"]


def test_training_batches_are_a_function_of_seed_and_step():
    a, b, c = training_batch(5, 4, seed=0), training_batch(5, 4, seed=0), training_batch(6, 4, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[2], c[2])


def test_learning_rate_warms_up_then_holds_then_decays_to_its_floor():
    cfg = FactorTrainingConfig(steps=1000, warmup=100, decay_start=500, lr=1e-3, lr_floor=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 300) == pytest.approx(1e-3)
    assert learning_rate(cfg, 999) == pytest.approx(1e-4, rel=1e-2)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, one_thread):
    cfg = FactorTrainingConfig(steps=4, batch_size=2, checkpoint_every=2, eval_every=2, eval_images=2,
                               prior_samples=16, generator=tiny_factor_config().__dict__)
    straight = train_factor_generator(cfg, tmp_path / "straight", log=lambda m: None)
    cfg_half = FactorTrainingConfig(**{**cfg.__dict__, "steps": 2})
    train_factor_generator(cfg_half, tmp_path / "halves", log=lambda m: None)
    state = json.loads((tmp_path / "halves" / "state.json").read_text())
    assert state["step"] == 2 and [r["step"] for r in state["history"]] == [2]
    resumed = train_factor_generator(cfg, tmp_path / "halves", resume=True, log=lambda m: None)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_image_loss_rewards_edges_that_l1_alone_would_blur():
    target = torch.zeros(1, 3, 16, 16)
    target[..., :, 8:] = 1.0
    blurred = torch.nn.functional.avg_pool2d(target, 5, 1, 2, count_include_pad=False)
    assert image_loss(blurred, target, 1.0) - image_loss(blurred, target, 0.0) > 0.01
    assert image_loss(target, target, 1.0) == 0


def test_pixel_figures_see_blur_and_detail():
    truth = faceworld.render(list(range(300_000, 300_008)), 0)
    blurred = torch.nn.functional.avg_pool2d(truth, 3, 1, 1, count_include_pad=False)
    same = pixel_fidelity(truth, truth)
    assert same["sharpness_ratio"] == pytest.approx(1.0) and same["high_frequency_ratio"] == pytest.approx(1.0)
    soft = pixel_fidelity(blurred, truth)
    assert soft["sharpness_ratio"] < 0.7 and soft["high_frequency_ratio"] < 0.5 and soft["psnr_db"] < 40
    assert central_crop(truth).shape[-2:] == (32, 32)
    assert gradient_energy(blurred) < gradient_energy(truth)
    assert high_frequency_energy(blurred) < high_frequency_energy(truth)


def test_a_factor_generator_backend_inverts_through_its_face_encoder():
    torch.manual_seed(0)
    g = StyleFaceGenerator(tiny_factor_config()).eval()
    g.fit_prior(torch.zeros(8, FACTOR_DIM))
    enc = ViewEncoder(FACTOR_DIM + faceworld.VIEW_DIM, 8)
    arc = IdentityModel("arcface", {"embedding_dim": 16, "widths": (8, 8, 8, 8)}).eval()
    backend = EmbeddedFaceBackend(g, enc, arc, refine_steps=1)
    img = faceworld.render([300_001], 0)
    w, v = backend.invert(img)
    assert w.shape == (1, 32) and v.shape == (1, faceworld.VIEW_DIM)
    with torch.no_grad():
        expected = g.map_identity(enc(img)[:, :FACTOR_DIM])
    assert torch.allclose(backend.encode_identity(img), expected)


def test_a_packaged_checkpoint_loads_as_the_embedded_backend_and_says_how_it_was_made(tmp_path, one_thread):
    cfg = FactorTrainingConfig(steps=2, batch_size=2, checkpoint_every=2, eval_every=2, eval_images=2,
                               prior_samples=16, generator=tiny_factor_config().__dict__)
    train_factor_generator(cfg, tmp_path / "run", log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="no face encoder"):
        package_generator(tmp_path / "run", tmp_path / "nowhere", tmp_path / "pkg")
    ViewEncoder(FACTOR_DIM + faceworld.VIEW_DIM, 8).save_pretrained(tmp_path / "enc", name="face_encoder")
    state = package_generator(tmp_path / "run", tmp_path / "enc", tmp_path / "pkg")
    meta = json.loads((tmp_path / "pkg" / "config.json").read_text())
    assert state["step"] == 2 and meta["steps_done"] == 2 and meta["seed"] == 0 and "train_seconds" in meta
    assert meta["losses"]["gradient_weight"] == cfg.gradient_weight and meta["losses"]["adversarial_weight"] == 0
    backend = EmbeddedFaceBackend.from_pretrained(tmp_path / "pkg", refine_steps=0)
    assert backend.generator.factor_conditioned and backend.factor_dim == FACTOR_DIM
    # the directory says how to invert (pixel-faithful refinement); the caller's keywords win
    assert meta["inversion"] == FACTOR_INVERSION and backend.refine_steps == 0
    assert (backend.identity_weight, backend.perceptual_weight) == (0.0, FACTOR_INVERSION["perceptual_weight"])
    assert float(backend.w_avg.abs().sum()) > 0  # latent statistics were fitted
    w, v = backend.invert(faceworld.render([300_002], 0))
    assert backend.render(w, v).shape == (1, 3, 64, 64)


def test_render_times_are_taken_in_alternation_so_a_busy_machine_slows_both_alike():
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def sample_latents(self, n, gen):
            return torch.zeros(n, 4)

        def sample_views(self, n, gen):
            return torch.zeros(n, 2)

        def render(self, w, v):
            calls.append(self.name)
            return torch.zeros(w.shape[0], 3, 8, 8)

    times = render_times_side_by_side({"model": Recorder("model"), "reference": Recorder("reference")}, rounds=3)
    assert set(times) == {"model", "reference"} and all(t >= 0 for t in times.values())
    assert calls == ["model", "reference"] + ["model", "reference"] * 3  # one warm-up each, then alternating


def test_the_feature_loss_looks_only_near_the_landmarks():
    _, v, truth, landmarks = training_batch(0, 4, seed=0, landmarks=True)
    mask = feature_mask(v, landmarks)
    assert mask.shape == (4, 1, 64, 64) and mask.max() <= 1 and 0.02 < mask.mean() < 0.3
    corners = truth.clone()
    corners[..., :8, :8] = 1 - corners[..., :8, :8]  # far from every landmark
    eyes = torch.where(mask > 0.9, torch.full_like(truth, 0.5), truth)  # the landmarks' own pixels grey
    assert feature_loss(corners, truth, mask) < 1e-3 < feature_loss(eyes, truth, mask)


def test_the_detail_mask_covers_glasses_and_facial_hair_and_nothing_on_a_face_without_them():
    identity = faceworld.sample_identities([20_000, 20_001])
    view = faceworld.sample_views([20_000, 20_001], [0, 0])
    for k in THIN_PARTS:
        identity[k] = torch.zeros_like(identity[k])
    identity["glasses"][0], identity["glasses_color"][0] = 2.0, torch.tensor([0.8, 0.1, 0.1])  # square, red
    images = faceworld.render_faces(identity, view)
    mask = detail_mask(identity, view, images)
    assert mask.shape == (2, 1, 64, 64) and mask[1].sum() == 0
    rim = (images[0] - faceworld.render_faces({**identity, "glasses": torch.zeros(2)}, view)[0]).abs().amax(0) > 0.1
    assert rim.sum() > 20 and bool(mask[0, 0][rim].all()) and mask[0].mean() < 0.15  # the frames, not the face
    identity["facial_hair"][1] = 3.0  # a goatee
    goatee = detail_mask(identity, view, faceworld.render_faces(identity, view))[1]
    assert goatee.sum() > 10 and goatee[0, 32:].sum() == goatee.sum()  # below the image's middle


def test_the_detail_loss_changes_training_and_its_weight_is_recorded(tmp_path):
    trained = {}
    for weight in (0.0, 3.0):
        cfg = FactorTrainingConfig(steps=2, batch_size=4, checkpoint_every=2, eval_every=2, eval_images=2,
                                   prior_samples=16, detail_weight=weight, generator=asdict(tiny_factor_config()))
        trained[weight] = train_factor_generator(cfg, tmp_path / str(weight), log=lambda m: None).state_dict()
    assert json.loads((tmp_path / "3.0" / "state.json").read_text())["config"]["detail_weight"] == 3.0
    assert any(not torch.equal(trained[0.0][k], trained[3.0][k]) for k in trained[0.0])


def test_one_uploaded_image_is_inverted_on_one_thread_and_the_thread_count_comes_back(monkeypatch):
    torch.manual_seed(0)
    g = StyleFaceGenerator(tiny_factor_config()).eval()
    enc = ViewEncoder(FACTOR_DIM + faceworld.VIEW_DIM, 8)
    arc = IdentityModel("arcface", {"embedding_dim": 16, "widths": (8, 8, 8, 8)}).eval()
    backend = EmbeddedFaceBackend(g, enc, arc, refine_steps=2, identity_weight=0.0)
    seen = []
    synthesize = g.synthesize
    monkeypatch.setattr(g, "synthesize", lambda *a, **k: seen.append(torch.get_num_threads()) or synthesize(*a, **k))
    torch.set_num_threads(2)
    images = faceworld.render([1_000_000, 1_000_001], 0)
    backend.invert(images[:1])
    assert seen == [1, 1] and torch.get_num_threads() == 2
    seen.clear()
    backend.invert(images)  # a batch keeps every thread
    assert seen == [2, 2]
    monkeypatch.setattr(g, "synthesize", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        backend.invert(images[:1])
    assert torch.get_num_threads() == 2


def test_a_patch_discriminator_learns_to_tell_crisp_faces_from_blurred_ones(one_thread):
    torch.manual_seed(0)
    disc = PatchDiscriminator()
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.99))

    def blur(x):
        return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    for step in range(80):
        real = faceworld.render(list(range(20_000 + 8 * step, 20_008 + 8 * step)), 0)
        loss = discriminator_loss(disc, real, blur(real))
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = faceworld.render(list(range(190_000, 190_016)), 0)  # faces it never saw
    with torch.no_grad():
        crisp, soft = disc(held_out).mean(), disc(blur(held_out)).mean()
    assert disc(held_out).shape == (16, 1, 8, 8), "one logit per patch"
    # flat patches (background, skin) are the same in both and score alike, so the means are close; the edges
    # make the difference
    assert crisp - soft > 0.1, (crisp, soft)
    assert generator_adversarial_loss(disc, blur(held_out)) > generator_adversarial_loss(disc, held_out)


def test_an_adversarial_run_checkpoints_its_discriminator_and_resumes_where_it_stopped(tmp_path, one_thread):
    cfg = FactorTrainingConfig(steps=4, batch_size=2, checkpoint_every=2, eval_every=2, eval_images=2,
                               prior_samples=16, adversarial_weight=0.1, adversarial_warmup=2,
                               generator=tiny_factor_config().__dict__)
    straight = train_factor_generator(cfg, tmp_path / "straight", log=lambda m: None)
    plain = train_factor_generator(FactorTrainingConfig(**{**cfg.__dict__, "adversarial_weight": 0.0}),
                                   tmp_path / "plain", log=lambda m: None)
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), plain.state_dict().values(),
                                                       strict=True)), "the adversarial term changes training"
    assert not (tmp_path / "plain" / "discriminator.safetensors").exists()
    train_factor_generator(FactorTrainingConfig(**{**cfg.__dict__, "steps": 2}), tmp_path / "halves",
                           log=lambda m: None)
    state = json.loads((tmp_path / "halves" / "state.json").read_text())
    assert state["adversarial_start"] == 0 and (tmp_path / "halves" / "discriminator.safetensors").exists()
    assert "d_loss" in state["history"][-1]
    committed = tmp_path / "committed"  # what is committed: no optimiser states, the discriminator kept
    shutil.copytree(tmp_path / "halves", committed)
    (committed / "discriminator_optimizer.safetensors").unlink()
    resumed = train_factor_generator(cfg, tmp_path / "halves", resume=True, log=lambda m: None)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    train_factor_generator(cfg, committed, resume=True, log=lambda m: None)
    assert json.loads((committed / "state.json").read_text())["adversarial_start"] == 0, "the ramp is not redone"
