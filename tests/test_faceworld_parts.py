"""Thin parts of a face-world picture (glasses, facial hair, moles, freckles): where they are, and how much of
each a render draws, measured against the face world's own picture."""

import math

import pytest
import torch

from legato_core import faceworld
from legato_core.faceworld.parts import THIN_PARTS, part_mask, part_recovery, without_parts


def faces_with(parts: dict[str, float], ids=(20_000, 20_001, 20_002)):
    identity = faceworld.sample_identities(list(ids))
    view = faceworld.sample_views(list(ids), 0)
    for k in THIN_PARTS:
        identity[k] = torch.zeros_like(identity[k])
    for k, v in parts.items():
        identity[k][0] = v  # only the first face has them
    identity["glasses_color"][0] = torch.tensor([0.9, 0.1, 0.1])
    return identity, view, faceworld.render_faces(identity, view)


def test_a_part_switched_off_is_gone_and_nothing_else_changes():
    identity, view, images = faces_with({"glasses": 1.0})
    plain = faceworld.render_faces(without_parts(identity, ("glasses",)), view)
    assert not torch.equal(plain[0], images[0]) and torch.equal(plain[1:], images[1:])
    with pytest.raises(ValueError, match="not a thin part"):
        without_parts(identity, ("nose",))


def test_the_mask_marks_the_pixels_a_part_changes_and_grows_on_request():
    identity, view, images = faces_with({"facial_hair": 3.0})  # a goatee
    mask = part_mask(identity, view, images)
    assert mask[1:].sum() == 0 and 5 < mask[0].sum() < 0.1 * 64 * 64
    grown = part_mask(identity, view, images, grow=1)
    assert grown[0].sum() > mask[0].sum() and bool((grown >= mask).all())


def test_recovery_is_one_for_the_truth_zero_for_a_render_without_the_part_and_nan_when_nobody_has_it():
    identity, view, images = faces_with({"glasses": 2.0, "mole": 1.0})
    plain = faceworld.render_faces(without_parts(identity), view)
    assert part_recovery(images, identity, view, images, "glasses") == (1.0, 1)
    assert part_recovery(plain, identity, view, images, "glasses")[0] == pytest.approx(0.0, abs=1e-6)
    half = (images + plain) / 2  # a half-drawn frame
    assert part_recovery(half, identity, view, images, "glasses")[0] == pytest.approx(0.5, abs=1e-5)
    recovery, faces = part_recovery(images, identity, view, images, "freckles")
    assert faces == 0 and math.isnan(recovery)


def test_rows_for_thin_parts_are_the_first_identities_that_show_each_part():
    from legato_core.faceworld.parts import identities_with_parts

    ids = identities_with_parts(1_000_000, per_part=2)
    assert len(ids) == 2 * len(THIN_PARTS) and len(set(ids)) == len(ids)
    upto = max(ids) + 1
    scan = list(range(1_000_000, upto))
    identity, view = faceworld.sample_identities(scan), faceworld.sample_views(scan, 0)
    images = faceworld.render(scan, 0)
    for k, part in enumerate(THIN_PARTS):
        shows = part_mask(identity, view, images, (part,)).flatten(1).sum(1) > 0
        mine = ids[2 * k:2 * k + 2]
        assert mine == sorted(mine) and all(bool(shows[i - 1_000_000]) for i in mine)
        # nobody before the last pick shows the part unless an earlier part already took them
        earlier = set(ids[:2 * k])
        skipped = [i for i in scan[:mine[-1] - 1_000_000] if bool(shows[i - 1_000_000]) and i not in mine]
        assert set(skipped) <= earlier


def test_rows_for_an_unknown_part_are_refused():
    from legato_core.faceworld.parts import identities_with_parts

    with pytest.raises(ValueError, match="not a thin part"):
        identities_with_parts(1_000_000, 1, parts=("tattoo",))
