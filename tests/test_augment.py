import pytest
import torch

from ferstudy.augment import MEAN, STD, Augmenter, center_crop, check_config, eval_views, normalize
from ferstudy.errors import UserError

torch.set_num_threads(1)

FULL = {
    "crop": 44,
    "pad": 2,
    "flip": True,
    "rotate": 10,
    "scale": 0.1,
    "translate": 0.1,
    "erase": 0.25,
    "brightness": 0.2,
    "contrast": 0.2,
}


def faces(b=16, seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 1, size, size), generator=g, dtype=torch.uint8)


def ramp(b=8, size=48):
    """pixel value encodes position: (row * size + col) mod 256 would alias, so use two images."""
    r = torch.arange(size).view(1, 1, size, 1).expand(b, 1, size, size)
    c = torch.arange(size).view(1, 1, 1, size).expand(b, 1, size, size)
    return r, c


def gen(seed):
    return torch.Generator().manual_seed(seed)


def denorm(x):
    return (x * STD + MEAN) * 255


def test_normalisation_constants():
    assert (MEAN, STD) == (0.5, 0.25)
    x = torch.tensor([0, 255, 128], dtype=torch.uint8)
    assert torch.allclose(normalize(x), torch.tensor([-2.0, 2.0, (128 / 255 - 0.5) / 0.25]), atol=1e-6)
    out = Augmenter({"crop": 48}, enabled=False)(faces(4))
    assert torch.allclose(out, (faces(4).float() / 255 - 0.5) / 0.25, atol=1e-6)


def test_determinism_and_seed_dependence():
    aug = Augmenter(FULL)
    x = faces(32)
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert a.dtype == torch.float32 and a.shape == (32, 1, 44, 44) and a.is_contiguous()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # a generator's state carries on: two calls differ, and resuming from a saved state repeats
    g = gen(5)
    first = aug(x, g)
    state = g.get_state()
    second = aug(x, g)
    assert not torch.allclose(first, second)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(aug(x, g2), second)
    # randomness only from the generator: the global RNG is neither used nor advanced
    torch.manual_seed(0)
    before = torch.get_rng_state()
    aug(x, gen(1))
    assert torch.equal(torch.get_rng_state(), before)


def test_accepts_3d_input_and_float_pixels():
    aug = Augmenter(FULL)
    x = faces(4)
    assert torch.equal(aug(x[:, 0], gen(3)), aug(x, gen(3)))
    xf = x.float()
    assert torch.allclose(aug(xf, gen(3)), aug(x, gen(3)), atol=1e-5)
    assert torch.allclose(Augmenter(FULL, enabled=False)(xf), Augmenter(FULL, enabled=False)(x), atol=1e-6)
    assert torch.equal(xf, x.float())  # the input is never modified


def test_crop_content_equals_source_window():
    aug = Augmenter({"crop": 40})
    rows, cols = ramp(64)
    p = aug.sample(64, gen(7))
    out_r = denorm(aug.apply(rows.to(torch.uint8), p)).round().long()[:, 0]
    out_c = denorm(aug.apply(cols.to(torch.uint8), p)).round().long()[:, 0]
    oy, ox = out_r[:, 0, 0], out_c[:, 0, 0]
    assert len(set(oy.tolist())) > 3 and len(set(ox.tolist())) > 3  # offsets vary over 0..8
    assert oy.min() >= 0 and oy.max() <= 8 and ox.max() <= 8
    ar = torch.arange(40)
    assert torch.equal(out_r, (oy[:, None, None] + ar[None, :, None]).expand(-1, -1, 40))
    assert torch.equal(out_c, (ox[:, None, None] + ar[None, None, :]).expand(-1, 40, -1))
    # and the window of a random image is exactly that slice
    x = faces(64)
    out = aug.apply(x, p)
    for i in range(0, 64, 9):
        y0, x0 = int(oy[i]), int(ox[i])
        assert torch.equal(out[i], normalize(x[i, :, y0 : y0 + 40, x0 : x0 + 40]))


def test_pad_fills_mid_grey():
    aug = Augmenter({"crop": 48, "pad": 4})
    x = torch.full((256, 1, 48, 48), 255, dtype=torch.uint8)
    out = aug(x, gen(0))
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert (out == 0).any() and (out[:, :, 4:-4, 4:-4] == 2).all()


def test_flip_really_mirrors():
    x = faces(64, seed=3)
    assert not torch.equal(x, x.flip(-1))
    out = Augmenter({"crop": 48, "flip": True})(x, gen(0))
    plain, mirrored = normalize(x), normalize(x.flip(-1))
    is_plain = (out == plain).flatten(1).all(1)
    is_mirror = (out == mirrored).flatten(1).all(1)
    assert torch.all(is_plain ^ is_mirror)
    assert 10 < int(is_mirror.sum()) < 54
    # with a crop: a flipped output is the mirror of the same window
    aug = Augmenter({"crop": 40, "flip": True})
    p = aug.sample(64, gen(1))
    flipped = p["flip"] < 0.5
    p_noflip = dict(p, flip=torch.ones(64))
    a, b = aug.apply(x, p), aug.apply(x, p_noflip)
    assert flipped.any() and (~flipped).any()
    assert torch.equal(a[flipped], b[flipped].flip(-1))
    assert torch.equal(a[~flipped], b[~flipped])
    assert not torch.equal(Augmenter({"crop": 48})(x, gen(0)), mirrored)  # flip off: never mirrors


def test_affine_identity_params_match_the_plain_crop():
    """With angle 0, zoom 1, no shift, the grid_sample path equals the exact gather path."""
    x = faces(32)
    plain = Augmenter({"crop": 40, "pad": 3, "flip": True})
    affine = Augmenter({"crop": 40, "pad": 3, "flip": True, "rotate": 15, "scale": 0.2, "translate": 0.1})
    p = plain.sample(32, gen(4))
    q = dict(
        p,
        angle=torch.full((32,), 0.5),
        scale=torch.full((32,), 0.5),
        tx=torch.full((32,), 0.5),
        ty=torch.full((32,), 0.5),
    )
    assert torch.allclose(affine.apply(x, q), plain.apply(x, p), atol=1e-4)
    assert not torch.allclose(affine.apply(x, p), plain.apply(x, p), atol=1e-2)


def test_affine_rotation_and_shift_directions():
    x = faces(4)
    ones = torch.ones(4)
    half = torch.full((4,), 0.5)
    aug = Augmenter({"crop": 48, "rotate": 90})
    p = dict(aug.sample(4, gen(0)), angle=ones, scale=half, tx=half, ty=half)
    out = aug.apply(x, p)
    rotated = [normalize(torch.rot90(x, k, dims=(-2, -1))) for k in (1, -1)]
    assert any(torch.allclose(out, r, atol=1e-4) for r in rotated)
    aug = Augmenter({"crop": 48, "translate": 0.125})  # u = 1 -> shift by 6 pixels
    p = dict(aug.sample(4, gen(0)), angle=half, scale=half, tx=ones, ty=half)
    out = aug.apply(x, p)
    assert torch.allclose(out[..., :, :-6], normalize(x[..., :, 6:]), atol=1e-4)
    assert torch.all(out[..., :, -6:].abs() < 1e-6)  # outside the image: mid-grey
    aug = Augmenter({"crop": 48, "scale": 0.5})  # u = 1 -> zoom 1.5 about the centre
    p = dict(aug.sample(4, gen(0)), angle=half, scale=ones, tx=half, ty=half)
    r, _ = ramp(4)
    out = denorm(aug.apply(r.to(torch.uint8), p))[0, 0, :, 0]
    assert torch.allclose(out[1:] - out[:-1], torch.full((47,), 1 / 1.5), atol=1e-3)


def test_erase_and_photometric():
    x = torch.full((200, 1, 48, 48), 200, dtype=torch.uint8)
    out = Augmenter({"crop": 48, "erase": 0.5})(x, gen(0))
    erased = (out == 0).flatten(1).any(1)
    assert 60 < int(erased.sum()) < 140
    frac = (out[erased] == 0).flatten(1).float().mean(1)
    assert frac.min() >= 0.01 and frac.max() <= 0.4
    # erased area is one rectangle: its row and column extents multiply to its area
    m = out[erased][:, 0] == 0
    rows, cols = m.any(2).sum(1), m.any(1).sum(1)
    assert torch.equal(rows * cols, m.flatten(1).sum(1))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(60, 200, (64, 1, 48, 48), generator=g, dtype=torch.uint8)
    out = Augmenter({"crop": 48, "brightness": 0.3})(x, gen(1))
    ratio = denorm(out).flatten(1).mean(1) / x.float().flatten(1).mean(1)
    assert ratio.min() >= 0.7 - 1e-3 and ratio.max() <= 1.3 + 1e-3 and ratio.std() > 0.05
    out = Augmenter({"crop": 48, "contrast": 0.3})(x, gen(1))
    ratio = denorm(out).flatten(1).std(1) / x.float().flatten(1).std(1)
    assert ratio.min() >= 0.7 - 1e-3 and ratio.max() <= 1.3 + 1e-3 and ratio.std() > 0.05
    assert torch.allclose(denorm(out).flatten(1).mean(1), x.float().flatten(1).mean(1), atol=0.5)


def test_output_range_is_sane():
    out = Augmenter(FULL)(faces(128), gen(0))
    assert torch.isfinite(out).all()
    assert out.min() >= -2 - 1e-5 and out.max() <= 2 + 1e-5
    assert abs(float(out.mean())) < 0.2 and 0.4 < float(out.std()) < 2.5  # noise input: bilinear smooths it


def test_disabled_is_center_crop():
    x = faces(8)
    expected = normalize(x[..., 2:46, 2:46])
    assert torch.equal(Augmenter(FULL, enabled=False)(x), expected)
    assert torch.equal(Augmenter(dict(FULL, enabled=False))(x, gen(0)), expected)
    assert torch.equal(Augmenter(None, enabled=False)(x), normalize(x))
    assert torch.equal(center_crop(x, 44), x[..., 2:46, 2:46])
    with pytest.raises(ValueError):
        Augmenter(FULL)(x)  # enabled needs a generator


def test_eval_views():
    x = faces(5)
    center = normalize(center_crop(x, 44))
    v = eval_views(x, 44, "none")
    assert v.shape == (1, 5, 1, 44, 44) and torch.equal(v[0], center)
    v = eval_views(x, 44, "flip")
    assert v.shape == (2, 5, 1, 44, 44)
    assert torch.equal(v[0], center) and torch.equal(v[1], center.flip(-1))
    v = eval_views(x[:, 0], 44, "tencrop")
    assert v.shape == (10, 5, 1, 44, 44) and v.is_contiguous()
    assert torch.equal(v[0], center)
    n = normalize(x)
    assert torch.equal(v[1], n[..., :44, :44]) and torch.equal(v[4], n[..., 4:, 4:])
    assert torch.equal(v[2], n[..., :44, 4:]) and torch.equal(v[3], n[..., 4:, :44])
    assert torch.equal(v[5:], v[:5].flip(-1))
    assert eval_views(x, 48, "none").shape == (1, 5, 1, 48, 48)
    with pytest.raises(UserError, match="unknown tta 'fivecrop'"):
        eval_views(x, 44, "fivecrop")


def test_config_errors():
    assert check_config({"crop": 44})["flip"] is False
    for cfg, what in [
        ({"flp": True}, "unknown option 'flp'"),
        ({"flip": 1}, "flip must be true or false"),
        ({"rotate": "10"}, "rotate must be a number"),
        ({"erase": 1.5}, "erase must be in [0, 1]"),
        ({"crop": 44.5}, "crop must be an integer"),
        ({"scale": True}, "scale must be a number"),
        ("yes", "must be a mapping"),
    ]:
        with pytest.raises(UserError) as e:
            Augmenter(cfg)
        assert what in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="crop 50 is larger"):
        Augmenter({"crop": 50})(faces(2), gen(0))
    out = Augmenter({"crop": 50, "pad": 1})(faces(2), gen(0))  # padding makes room
    assert out.shape == (2, 1, 50, 50)
