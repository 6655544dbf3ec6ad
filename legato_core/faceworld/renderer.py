"""Vectorised, anti-aliased renderer of face-world images.

Every part of a face is a signed-distance shape evaluated on the pixel grid for the whole batch at once and
composited front to back; coverage comes from the distance in pixel units, which anti-aliases every edge.
Head rotation is modelled by placing facial features on an ellipsoid and rotating it (yaw, pitch); roll, scale
and shift act on the whole image.
"""

from __future__ import annotations

import torch

from .attributes import IDENTITY_KEYS, VIEW_KEYS

MIN_SIZE, MAX_SIZE = 16, 512
HEAD_CENTER_Y = -0.02


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    return size


def _col(p: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B,1,1) for broadcasting against (B,H,W) grids."""
    return p.view(-1, 1, 1)


def _ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (negative inside)."""
    px, py = (x - cx) / rx, (y - cy) / ry
    k0 = torch.sqrt(px * px + py * py + 1e-12)
    k1 = torch.sqrt((px / rx) ** 2 + (py / ry) ** 2 + 1e-12)
    return k0 * (k0 - 1.0) / k1


def _segment(x, y, ax, ay, bx, by, r):
    """Signed distance to a capsule from a to b with radius r."""
    pax, pay = x - ax, y - ay
    bax, bay = bx - ax, by - ay
    h = ((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-12)).clamp(0, 1)
    return torch.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2 + 1e-12) - r


def _box(x, y, cx, cy, hx, hy, r=0.0):
    dx, dy = (x - cx).abs() - hx + r, (y - cy).abs() - hy + r
    outside = torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2 + 1e-12)
    return outside + torch.maximum(dx, dy).clamp(max=0) - r


def project_feature(u, v, depth, hw, hh, yaw, pitch):
    """Project a frontal feature point (u, v) on the head ellipsoid (half-widths hw, hh; depth hw) turned by yaw
    and pitch; returns (x, y, visibility, x-foreshortening) in the face frame (head centre at the origin)."""
    hd = hw
    cyaw, syaw, cpit, spit = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    z = hd * torch.sqrt((1 - (u / hw) ** 2 - (v / hh) ** 2).clamp(min=0.02)) + depth
    u1 = u * cyaw + z * syaw
    z1 = -u * syaw + z * cyaw
    v1 = v * cpit - z1 * spit
    z2 = v * spit + z1 * cpit
    alpha = torch.atan2(u, z)
    fx = (torch.cos(alpha + yaw) / torch.cos(alpha).clamp(min=0.2)).clamp(0.25, 1.2)
    vis = torch.sigmoid(z2 / (0.08 * hd))
    return u1, v1, vis, fx


class _Canvas:
    """Front-to-back compositing of coloured coverage layers."""

    def __init__(self, b: int, h: int, w: int, px: torch.Tensor):
        self.color = torch.zeros(b, 3, h, w, device=px.device)
        self.alpha = torch.zeros(b, 1, h, w, device=px.device)
        self.px = px  # pixel size in face units, (B,1,1)

    def cov(self, d: torch.Tensor, soft: float = 1.0) -> torch.Tensor:
        return (0.5 - d / (self.px * soft)).clamp(0, 1)

    def paint(self, a: torch.Tensor, color: torch.Tensor) -> None:
        a = a.unsqueeze(1)
        if color.dim() == 2:
            color = color.view(-1, 3, 1, 1)
        self.color.mul_(1 - a).add_(color * a)
        self.alpha.mul_(1 - a).add_(a)


def render_faces(identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor], size: int = 64) -> torch.Tensor:
    """Render faces; returns RGB float tensor (B, 3, size, size) in [0, 1]."""
    size = _check_size(size)
    missing = [k for k in IDENTITY_KEYS if k not in identity] + [k for k in VIEW_KEYS if k not in view]
    if missing:
        raise KeyError(f"missing face-world factors: {missing}")
    b = identity["head_w"].shape[0]
    if view["yaw"].shape[0] != b:
        raise ValueError(f"identity batch {b} != view batch {view['yaw'].shape[0]}")
    I, V = identity, view  # noqa: E741, N806 - short names keep the geometry readable

    dev = I["head_w"].device  # renders where the factors live (a GPU trains the generator on its own renders)
    lin = (torch.arange(size, dtype=torch.float32, device=dev) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    gx, gy = gx.unsqueeze(0), gy.unsqueeze(0)
    scale = _col(V["scale"])
    dx, dy = (gx - _col(V["shift_x"])) / scale, (gy - _col(V["shift_y"])) / scale
    cr, sr = torch.cos(_col(V["roll"])), torch.sin(_col(V["roll"]))
    x = cr * dx + sr * dy
    y = -sr * dx + cr * dy - HEAD_CENTER_Y  # face frame: head centre at the origin
    cv = _Canvas(b, size, size, (2.0 / size) / scale)

    hw, hh = _col(I["head_w"]), _col(I["head_h"])
    hd = hw
    yaw, pitch = _col(V["yaw"]), _col(V["pitch"])
    cyaw, syaw, cpit = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch)

    def proj(u, v, depth=0.0):
        return project_feature(u, v, depth, hw, hh, yaw, pitch)

    skin = I["skin"]
    hair = I["hair_color"]
    style = I["hair_style"].round().long()
    shift_hair = -syaw * 0.08 * hw

    def is_style(*names):
        from .attributes import HAIR_STYLES

        idx = [HAIR_STYLES.index(n) for n in names]
        m = torch.zeros(b, device=dev)
        for i in idx:
            m = m + (style == i).float()
        return _col(m)

    # -- clothes and neck ---------------------------------------------------------------------------------
    cv.paint(cv.cov(_ellipse(x, y, 0.0, 1.25, 0.95, 0.52)), V["clothes"])
    cv.paint(cv.cov(_box(x, y, syaw * 0.05, hh * 0.9 + 0.1, hw * 0.42, 0.32, 0.02)), skin * 0.82)

    # -- hair behind the head ------------------------------------------------------------------------------
    back_long = cv.cov(_box(x, y, shift_hair, hh * 0.05, hw * 1.22, hh * 0.95, 0.12)) * is_style("long")
    back_afro = cv.cov(_ellipse(x, y, shift_hair, -0.1, hw * 1.5, hh * 1.15)) * is_style("afro")
    cv.paint(back_long + back_afro, hair * 0.8)

    # -- ears --------------------------------------------------------------------------------------------------
    ear_y = _col(I["eye_y"]) + 0.05
    es = _col(I["ear_size"])
    for side in (-1.0, 1.0):
        u = side * hw * 1.02
        ex = u * cyaw
        ey = ear_y * cpit
        cv.paint(cv.cov(_ellipse(x, y, ex, ey, es * 0.55, es)), skin * 0.9)
        cv.paint(cv.cov(_ellipse(x, y, ex + side * es * 0.08, ey, es * 0.25, es * 0.6)) * 0.5, skin * 0.7)

    # -- head (jaw narrows towards the chin) ------------------------------------------------------------------
    t = (y / hh).clamp(0, 1) ** 2
    rx = hw * (1 - (1 - _col(I["jaw"])) * 0.55 * t)
    cx = syaw * hd * 0.25 * t
    f = torch.sqrt(((x - cx) / rx) ** 2 + (y / hh) ** 2 + 1e-12)
    head_d = (f - 1) * torch.minimum(rx, hh)
    head = cv.cov(head_d)
    cv.paint(head, skin)

    # -- blush and freckles -----------------------------------------------------------------------------------
    for side in (-1.0, 1.0):
        bx, by, vis, fx = proj(side * _col(I["eye_spacing"]) * 1.15, _col(I["mouth_y"]) - 0.12)
        cheek = torch.sigmoid(-_ellipse(x, y, bx, by, 0.07 * fx, 0.05) / 0.025)
        blush = torch.tensor([0.92, 0.35, 0.35], device=dev).expand(b, 3)
        cv.paint(cheek * _col(I["blush"]) * 0.45 * vis * head, blush)
        # freckles: a dot lattice inside the cheek patch
        fx_pat = torch.sin((x - bx) * 95.0) * torch.sin((y - by) * 80.0 + (x - bx) * 30.0)
        dots = (fx_pat - 0.8).clamp(min=0) * 5.0
        patch = torch.sigmoid(-_ellipse(x, y, bx, by, 0.085 * fx, 0.06) / 0.01)
        cv.paint(dots * patch * _col(I["freckles"]) * vis * head, skin * 0.6)

    # -- facial hair ---------------------------------------------------------------------------------------------
    fh = I["facial_hair"].round().long()
    beard_col = hair * 0.85
    mx, my, mvis, mfx = proj(torch.zeros_like(hw), _col(I["mouth_y"]))
    beard = torch.maximum(head_d, (my - 0.07) - y)
    beard_a = cv.cov(beard) * _col((fh == 2).float())
    goatee_a = cv.cov(_ellipse(x, y, mx, my + 0.08, _col(I["mouth_w"]) * 0.45 * mfx, 0.065)) * _col((fh == 3).float())
    cv.paint(torch.maximum(beard_a, goatee_a) * 0.95, beard_col)

    # -- eyes, brows ------------------------------------------------------------------------------------------
    e_sp, e_y, e_size = _col(I["eye_spacing"]), _col(I["eye_y"]), _col(I["eye_size"])
    e_open = _col(V["eye_open"])
    gaze = _col(V["gaze"])
    brow_w = _col(I["brow_len"])
    brow_col = I["brow_color"]
    for side in (-1.0, 1.0):
        ex, ey, vis, fx = proj(side * e_sp, e_y, 0.0)
        rx_e, ry_e = e_size * fx, e_size * _col(I["eye_aspect"]) * e_open
        cv.paint(cv.cov(_ellipse(x, y, ex, ey, rx_e + 0.008, ry_e + 0.008)) * vis, skin * 0.55)
        sclera = cv.cov(_ellipse(x, y, ex, ey, rx_e, ry_e))
        cv.paint(sclera * vis, torch.tensor([0.96, 0.96, 0.94], device=dev).expand(b, 3))
        ix = ex + (gaze * 0.35 + syaw * 0.6) * e_size * fx
        ri = e_size * 0.58
        cv.paint(cv.cov(_ellipse(x, y, ix, ey, ri * fx, ri)) * sclera * vis, I["iris"])
        cv.paint(cv.cov(_ellipse(x, y, ix, ey, ri * 0.45 * fx, ri * 0.45)) * sclera * vis,
                 torch.tensor([0.03, 0.03, 0.03], device=dev).expand(b, 3))
        # brow: capsule above the eye; tilt raises the outer end
        by = ey - e_size * _col(I["eye_aspect"]) - 0.045 - _col(V["brow_raise"])
        tilt = _col(I["brow_tilt"]) * brow_w
        ax_, bx_ = ex - side * brow_w * fx * 0.7, ex + side * brow_w * fx
        d = _segment(x, y, ax_, by + tilt * 0.3, bx_, by - tilt, _col(I["brow_thick"]))
        cv.paint(cv.cov(d) * vis, brow_col)

    # -- nose ---------------------------------------------------------------------------------------------------
    n_len, n_w = _col(I["nose_len"]), _col(I["nose_w"])
    tip_x, tip_y, _nvis, nfx = proj(torch.zeros_like(hw), e_y + 0.04 + n_len, 0.07)
    root_x, root_y, _, _ = proj(torch.zeros_like(hw), e_y + 0.03, 0.02)
    ridge = _segment(x, y, root_x + n_w * 0.35, root_y, tip_x + n_w * 0.45, tip_y - 0.02, 0.006)
    cv.paint(cv.cov(ridge, soft=1.5) * 0.55, skin * 0.7)
    cv.paint(cv.cov(_ellipse(x, y, tip_x, tip_y, n_w * nfx, n_w * 0.55)) * 0.5, skin * 0.86)
    for side in (-1.0, 1.0):
        cv.paint(cv.cov(_ellipse(x, y, tip_x + side * n_w * 0.55 * nfx, tip_y + n_w * 0.25, n_w * 0.28 * nfx,
                                 n_w * 0.17)) * 0.8, skin * 0.45)

    # -- moustache and mouth -----------------------------------------------------------------------------------
    m_w, lip = _col(I["mouth_w"]) * mfx, _col(I["lip_thick"])
    must = cv.cov(_ellipse(x, y, mx, my - lip - 0.03, m_w * 1.05, 0.024)) * _col((fh == 1).float() + (fh == 2).float())
    cv.paint(must * mvis, beard_col)
    smile = _col(V["smile"])
    ddx = (x - mx) / m_w
    yc = my - smile * 0.045 * ddx**2
    thick = lip * torch.sqrt((1 - ddx**2).clamp(min=0)) + 0.004
    slope = torch.sqrt(1 + (2 * smile * 0.045 * ddx / m_w) ** 2)
    lips = torch.maximum((y - yc).abs() / slope - thick, (x - mx).abs() - m_w)
    cv.paint(cv.cov(lips) * mvis, I["lip_color"])
    line = torch.maximum((y - yc).abs() - 0.006, (x - mx).abs() - m_w * 0.95)
    cv.paint(cv.cov(line) * mvis, I["lip_color"] * 0.45)

    # -- mole ---------------------------------------------------------------------------------------------------
    mox, moy, movis, _ = proj(_col(I["mole_x"]), _col(I["mole_y"]))
    mole = cv.cov(_ellipse(x, y, mox, moy, 0.016, 0.016)) * _col(I["mole"]) * movis
    cv.paint(mole, torch.tensor([0.25, 0.15, 0.1], device=dev).expand(b, 3))

    # -- hair on top --------------------------------------------------------------------------------------------
    hl = _col(I["hairline"])
    xr = (x - shift_hair) / hw
    cap_shell = _ellipse(x, y, shift_hair, -0.015, hw * 1.07, hh * 1.06)
    side_part = is_style("side-part")
    line_y = hl + 0.3 * xr**2 + side_part * (0.12 * xr - 0.05)
    afro = is_style("afro")
    line_y = line_y + afro * 0.04
    cap = torch.maximum(cap_shell, y - line_y)
    cap_a = cv.cov(cap) * is_style("crop", "long", "bun", "side-part", "afro")
    bun_a = cv.cov(_ellipse(x, y, shift_hair, -hh - 0.07, 0.13, 0.1)) * is_style("bun")
    mohawk = torch.maximum(_box(x, y, shift_hair, -hh * 0.55, 0.06, hh * 0.62, 0.05), y - (hl + 0.05))
    mohawk_a = cv.cov(mohawk) * is_style("mohawk")
    cv.paint(torch.maximum(torch.maximum(cap_a, bun_a), mohawk_a), hair)
    # strand texture: darker stripes inside the hair masses give the hair a direction
    strands = 0.5 + 0.5 * torch.sin((x - shift_hair) * 60 + y * 12)
    cv.paint((torch.maximum(cap_a, mohawk_a) * strands * 0.18), hair * 0.55)

    # -- glasses ------------------------------------------------------------------------------------------------
    gl = I["glasses"].round().long()
    round_g, square_g = _col((gl == 1).float()), _col((gl == 2).float())
    g_col = I["glasses_color"]
    inner = []
    for side in (-1.0, 1.0):
        ex, ey, vis, fx = proj(side * e_sp, e_y, 0.03)
        grx, gry = e_size * 1.55 * fx, e_size * 1.3
        ring_r = _ellipse(x, y, ex, ey, grx, gry).abs() - 0.011
        ring_s = _box(x, y, ex, ey, grx, gry * 0.9, 0.015).abs() - 0.011
        lens = (cv.cov(_box(x, y, ex, ey, grx, gry * 0.9, 0.015)) * square_g
                + cv.cov(_ellipse(x, y, ex, ey, grx, gry)) * round_g)
        cv.paint(lens * 0.18 * vis, torch.tensor([0.85, 0.92, 1.0], device=dev).expand(b, 3))
        ring = cv.cov(ring_r) * round_g + cv.cov(ring_s) * square_g
        cv.paint(ring * vis, g_col)
        inner.append((ex - side * grx, ey))
    bridge = _segment(x, y, inner[0][0], inner[0][1] - 0.01, inner[1][0], inner[1][1] - 0.01, 0.008)
    cv.paint(cv.cov(bridge) * (round_g + square_g), g_col)

    # -- light and background ----------------------------------------------------------------------------------
    nx, ny = (x / (hw * 1.2)), (y / (hh * 1.2))
    nz = torch.sqrt((1 - nx**2 - ny**2).clamp(min=0.0))
    az, el = _col(V["light_azimuth"]), _col(V["light_elevation"])
    lx, ly, lz = torch.sin(az) * torch.cos(el), -torch.sin(el), torch.cos(az) * torch.cos(el)
    diffuse = (nx * lx + ny * ly + nz * lz).clamp(min=0)
    strength = _col(V["light_strength"])
    shade = _col(V["ambient"]) * (1 - strength + strength * 1.35 * diffuse)
    bg = V["background"].view(-1, 3, 1, 1) * (1 + _col(V["background_tint"]).unsqueeze(1) * gy.unsqueeze(1))
    out = bg * (1 - cv.alpha) + cv.color * shade.unsqueeze(1)
    return out.clamp(0, 1)
