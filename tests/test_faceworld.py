"""The face world: deterministic identities, any number of views, clear errors."""

import pytest
import torch

from legato_core import faceworld


def test_same_id_gives_identical_pixels():
    a = faceworld.render([1_000_123, 5], [0, 3])
    b = faceworld.render([1_000_123, 5], [0, 3])
    assert torch.equal(a, b)


def test_images_are_rgb_in_unit_range_at_requested_size():
    for size in (32, 64, 128):
        img = faceworld.render([7], 0, size=size)
        assert img.shape == (1, 3, size, size)
        assert img.min() >= 0 and img.max() <= 1


def test_different_ids_differ_and_views_differ():
    a, b = faceworld.render([1, 2], 0)
    assert (a - b).abs().mean() > 0.02
    v0, v1 = faceworld.render([1, 1], [0, 1])
    assert (v0 - v1).abs().mean() > 0.02


def test_identity_has_at_least_16_attributes_and_five_hair_styles():
    ident = faceworld.sample_identities([3])
    assert len(ident) >= 16
    assert len(faceworld.HAIR_STYLES) >= 5
    styles = faceworld.sample_identities(list(range(300)))["hair_style"].unique()
    assert len(styles) == len(faceworld.HAIR_STYLES)


def test_views_are_independent_of_identity_attributes():
    # the same view index gives different poses for different people, and identity factors ignore views
    v = faceworld.sample_views([10, 11], [0, 0])
    assert v["yaw"][0] != v["yaw"][1]
    assert torch.equal(faceworld.sample_identities([10])["skin"], faceworld.sample_identities([10])["skin"])


def test_view_vector_roundtrip():
    v = faceworld.sample_views(list(range(20)), 4)
    vec = faceworld.encode_view(v)
    assert vec.shape == (20, faceworld.VIEW_DIM)
    assert torch.allclose(faceworld.encode_view(faceworld.decode_view(vec)), vec, atol=1e-5)


def test_pose_stays_within_25_degrees():
    v = faceworld.sample_views(list(range(200)), 0)
    for k in ("yaw", "pitch", "roll"):
        assert v[k].abs().max() <= 25.01 * torch.pi / 180


@pytest.mark.parametrize("bad", [-1, [3, -2]])
def test_negative_ids_are_rejected(bad):
    with pytest.raises(ValueError, match="non-negative"):
        faceworld.render(bad, 0)


@pytest.mark.parametrize("bad", ["7", 3.5, [1, "2"], None, True])
def test_non_integer_ids_are_rejected(bad):
    with pytest.raises(TypeError, match=r"integers?|int"):
        faceworld.render(bad, 0)


@pytest.mark.parametrize("size", [8, 0, 1024])
def test_unsupported_sizes_are_rejected(size):
    with pytest.raises(ValueError, match="size"):
        faceworld.render([1], 0, size=size)


def test_size_must_be_int():
    with pytest.raises(TypeError, match="size"):
        faceworld.render([1], 0, size=64.0)


def test_contact_sheet_layout(tmp_path):
    imgs = faceworld.render([1, 1, 2, 2], [0, 1, 0, 1])
    sheet = faceworld.contact_sheet(imgs, rows=2, pad=2, upscale=1)
    assert sheet.size == (2 * 66 + 2, 2 * 66 + 2)
    path = faceworld.save_png(sheet, tmp_path / "s.png")
    assert path.stat().st_size > 0
