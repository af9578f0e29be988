"""Procedural 48x48 grayscale faces for the 7 FER2013 expressions, with ground-truth regions.

A fresh machine has no FER2013, so the demo, the notebooks and the tests run on these faces.
Each expression is drawn as a few facial action cues in known places, after the Facial Action
Coding System (Ekman & Friesen, 1978) prototypes of the basic emotions:

========  ==============================================================================
angry     brows lowered and drawn together (AU4), eyes narrowed (AU7), lips pressed (AU24)
disgust   the same brows a little weaker, nose wrinkled (AU9), upper lip raised on one side (AU10)
fear      brows raised and drawn together (AU1+2+4), eyes wide (AU5), lips stretched (AU20)
happy     smile (AU12), cheeks raised with nasolabial folds (AU6), eyes slightly narrowed
sad       inner brows raised (AU1), mouth corners down (AU15)
surprise  brows raised high and arched (AU1+2), eyes wide (AU5), jaw dropped: open O (AU26)
neutral   none
========  ==============================================================================

Every face varies in expression intensity (subtle to full) and in nuisances that carry no
label: shift (+-3 px), scale (+-10 %), rotation (+-10 deg), mirror, skin, hair, background
and lighting, contrast, noise, blur and, on some faces, a hand in front of the face. Classes
follow FER2013's Training frequencies (disgust is rare) and disgust shares angry's brows, so
a small CNN confuses disgust with angry, as it does on FER2013.

Each face comes with a region map: a ``(48, 48)`` array of ids into :data:`REGION_NAMES`,
warped with the face (nearest neighbour), so an explanation can be checked against where the
evidence was drawn (:data:`CUE_REGIONS`).

Drawing is vectorised over faces: every shape is a signed distance evaluated on the pixel
grid mapped back into the face's own frame, so the affine warp costs nothing extra and edges
are anti-aliased by clipping the distance to one pixel.
"""

from __future__ import annotations

import numpy as np

from fervis._checks import positive_int
from fervis.constants import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from fervis.regions import REGION_NAMES

__all__ = ["REGION_NAMES", "CUE_REGIONS", "FER2013_TRAINING_COUNTS", "CLASS_PROBS", "generate", "make_dataset"]

_R = {name: i for i, name in enumerate(REGION_NAMES)}

#: Regions holding each class's cues. Neutral has no cue of its own: its evidence is the
#: absence of the others, which a model can only check where they would be.
CUE_REGIONS = {
    "angry": ("brows", "eyes", "mouth"),
    "disgust": ("brows", "nose", "mouth"),
    "fear": ("brows", "eyes", "mouth"),
    "happy": ("mouth", "cheeks"),
    "sad": ("brows", "mouth"),
    "surprise": ("brows", "eyes", "mouth"),
    "neutral": ("brows", "eyes", "mouth"),
}

#: FER2013 Training class counts (angry, disgust, fear, happy, sad, surprise, neutral).
FER2013_TRAINING_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
CLASS_PROBS = tuple(c / sum(FER2013_TRAINING_COUNTS) for c in FER2013_TRAINING_COUNTS)

# Faces per random stream: face i of a seed is drawn from stream i // _CHUNK, so a face does
# not depend on how many faces are asked for (generate(10)[:5] == generate(5)).
_CHUNK = 1000
_CENTRE = (IMAGE_SIZE - 1) / 2.0
_F32 = np.float32  # drawing stays in float32: np.where of two Python floats would give float64

# Expression cues at full intensity, one column per class in CLASS_NAMES order:
#           angry disgust fear  happy  sad  surprise neutral
_CUES = {
    # brows: + lowers (rows), inner end / outer end; - pulls the inner ends together (px)
    "brow_inner": (3.2, 3.0, -2.8, 0.0, -3.0, -3.6, 0.0),
    "brow_outer": (0.8, 0.7, -1.8, 0.0, 1.0, -3.4, 0.0),
    "brow_pull": (-1.4, -1.3, -1.2, 0.0, -0.5, 0.0, 0.0),
    "brow_arch": (0.0, 0.0, 0.2, 0.0, 0.0, 1.5, 0.0),
    # eyes: change of the opening half-height (px); raise of the lower lid (fraction)
    "eye_open": (-1.0, -0.9, 1.5, -0.6, -0.3, 1.7, 0.0),
    "lower_lid": (0.2, 0.2, 0.0, 0.5, 0.0, 0.0, 0.0),
    # nose wrinkle and raised cheeks (strength 0-1)
    "wrinkle": (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "cheeks": (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
    # mouth: corners (+ down), half-width change, opening up/down, lip thickness change,
    # one-sided raise of the upper lip, share of the opening filled by teeth
    "corners": (0.3, 0.6, 0.6, -3.4, 3.0, 0.0, 0.0),
    "width": (-1.6, -0.6, 3.2, 2.0, -0.5, -2.8, 0.0),
    "open_up": (0.0, 0.5, 0.9, 1.0, 0.0, 2.6, 0.0),
    "open_down": (0.0, 0.2, 1.0, 1.0, 0.0, 3.4, 0.0),
    "lips": (-0.8, 0.0, -0.3, 0.0, 0.0, 0.0, 0.0),
    "lip_raise": (0.0, 2.4, 0.0, 0.0, 0.0, 0.0, 0.0),
    "teeth": (0.0, 0.3, 0.6, 0.7, 0.0, 0.1, 0.0),
}
_CUE_TABLE = {k: np.asarray(v, dtype=np.float32) for k, v in _CUES.items()}


def _check_probs(class_probs):
    if class_probs is None:
        return np.asarray(CLASS_PROBS, dtype=np.float64)
    probs = np.asarray(class_probs, dtype=np.float64)
    if probs.shape != (NUM_CLASSES,) or not np.all(np.isfinite(probs)) or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(
            f"The 'class_probs' parameter of fervis.synthetic.generate must be {NUM_CLASSES} non-negative "
            f"numbers with a positive sum (one per class in {CLASS_NAMES}). Got {class_probs!r} instead."
        )
    return probs / probs.sum()


def _quota_labels(rng, probs, size):
    """``size`` labels with class counts as close to ``probs`` as integers allow, shuffled."""
    exact = probs * size
    counts = np.floor(exact).astype(np.int64)
    short = size - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts))


def _sample(rng, labels):
    """Per-face parameters (1-D float32 arrays) of one stream: identity, expression, nuisance."""
    n = len(labels)

    def u(lo, hi):
        return rng.uniform(lo, hi, n).astype(np.float32)

    def g(mu, sd):
        return rng.normal(mu, sd, n).astype(np.float32)

    p = {}
    # Expression intensity: subtle to full, most faces in between.
    p["intensity"] = (0.2 + 0.8 * rng.beta(2.0, 1.4, n)).astype(np.float32)
    for name, table in _CUE_TABLE.items():
        p[name] = table[labels] * p["intensity"]
    p["lip_side"] = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)

    # Identity: the geometry of a neutral face.
    p["head_ax"], p["head_ay"], p["head_cy"] = g(16.8, 0.7), g(22.0, 0.8), g(25.5, 0.6)
    p["eye_y"], p["eye_dx"], p["eye_a"], p["eye_b"] = g(19.0, 0.6), g(8.3, 0.4), g(3.8, 0.25), g(2.0, 0.2)
    p["brow_gap"], p["brow_thick"], p["brow_len"] = g(5.6, 0.4), g(2.2, 0.3), g(8.8, 0.6)
    p["nose_y"], p["mouth_y"], p["mouth_w"], p["lip_t"] = g(30.2, 0.5), g(37.0, 0.6), g(7.0, 0.4), g(1.8, 0.2)
    p["iris"] = g(1.7, 0.15)
    # Tones and hair.
    p["skin"] = u(95.0, 200.0)
    p["light"] = g(0.0, 14.0)  # side lighting, grey levels per half face
    p["bg"] = u(15.0, 235.0)
    p["bg_grad_x"], p["bg_grad_y"] = g(0.0, 12.0), g(0.0, 12.0)
    blond = rng.random(n) < 0.15
    p["hair_tone"] = np.where(blond, u(140.0, 200.0), u(10.0, 100.0)).astype(np.float32)
    style = rng.choice(3, n, p=[0.1, 0.55, 0.35])  # bald, short, long
    # The hairline stays above the highest brows of any expression (bangs would hide the cue,
    # and a hairline that moved with the expression would itself give the label away).
    hairline = np.minimum(g(7.5, 1.2), p["eye_y"] - p["brow_gap"] - 7.0)
    p["hairline"] = np.where(style == 0, -20.0, hairline).astype(np.float32)
    p["hair_long"] = np.where(style == 2, u(28.0, 44.0), 0.0).astype(np.float32)
    p["hair_phase"] = u(0.0, 2 * np.pi)
    # Nuisance: pose, mirror, contrast, noise, blur.
    p["dx"], p["dy"] = u(-3.0, 3.0), u(-3.0, 3.0)
    p["scale"] = u(0.9, 1.1)
    p["angle"] = np.deg2rad(u(-10.0, 10.0))
    p["mirror"] = (rng.random(n) < 0.5).astype(np.float32)
    p["contrast"] = u(0.8, 1.15)
    p["noise"] = u(1.0, 5.0)
    p["blur"] = np.where(rng.random(n) < 0.4, u(0.2, 0.6), 0.0).astype(np.float32)
    # A hand in front of the face on about one face in eight.
    p["occluded"] = (rng.random(n) < 0.12).astype(np.float32)
    upper = rng.random(n) < 0.25
    p["hand_x"] = g(_CENTRE, 8.0)
    p["hand_y"] = np.where(upper, u(14.0, 24.0), u(30.0, 46.0)).astype(np.float32)
    p["hand_angle"] = u(-np.pi, np.pi)
    p["hand_size"] = u(0.8, 1.15)
    p["hand_tone"] = p["skin"] + g(0.0, 18.0)
    return p


def _cov(d):
    """Anti-aliased coverage of a shape from its signed distance (px, negative inside)."""
    out = 0.5 - d
    return np.clip(out, 0.0, 1.0, out=out)


def _mark(regions, name, mask):
    """Set the region id of the pixels in ``mask`` (in place; works on views)."""
    np.copyto(regions, np.uint8(_R[name]), where=mask)


def _ellipse_d(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse centred at the origin."""
    nx, ny = x / a, y / b
    grad = 2.0 * np.sqrt((nx / a) ** 2 + (ny / b) ** 2) + 1e-6
    return (nx * nx + ny * ny - 1.0) / grad


def _segment_d(x, y, x0, y0, x1, y1, radius, arch=0.0):
    """Signed distance to a thick segment (a capsule), its middle raised by ``arch`` px."""
    bx, by = x1 - x0, y1 - y0
    px, py = x - x0, y - y0
    t = np.clip((px * bx + py * by) / (bx * bx + by * by + 1e-6), 0.0, 1.0)
    ex, ey = px - t * bx, py - t * by + arch * 4.0 * t * (1.0 - t)
    return np.sqrt(ex * ex + ey * ey) - radius


def _blend(img, tone, alpha):
    img += alpha * (tone - img)


def _render(p, noise):
    """Draw the faces of parameter dict ``p`` (arrays shaped (m, 1, 1)); return images, regions."""
    m = p["skin"].shape[0]
    size = IMAGE_SIZE
    c = _CENTRE
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    # Output pixel -> face frame: undo shift, rotation and scale about the centre, and mirror.
    # x is relative to the face's vertical axis; symmetric features are drawn once, on |x|.
    ox, oy = cols[None] - c - p["dx"], rows[None] - c - p["dy"]
    cos, sin = np.cos(p["angle"]) / p["scale"], np.sin(p["angle"]) / p["scale"]
    flip = 1.0 - 2.0 * p["mirror"]
    x = flip * (cos * ox + sin * oy)
    y = (cos * oy - sin * ox) + c
    ax = np.abs(x)
    skin = p["skin"]
    img = np.broadcast_to(p["bg"] + p["bg_grad_x"] * ox / c + p["bg_grad_y"] * oy / c, (m, size, size)).copy()
    regions = np.zeros((m, size, size), dtype=np.uint8)

    # Hair around the head (the face is drawn over it): short hair ends by the ears.
    head_y = y - p["head_cy"]
    has_hair = p["hairline"] > 0
    long_hair = p["hair_long"] > 0
    hair_d = _ellipse_d(x, head_y, p["head_ax"] + np.where(long_hair, _F32(4.0), _F32(2.2)),
                        p["head_ay"] + np.where(long_hair, _F32(6.0), _F32(2.0)))
    hair_d = np.maximum(hair_d, y - np.where(long_hair, p["hair_long"], p["eye_y"] + 5.0))
    hair = hair_d <= 0
    streaks = 6.0 * np.sin(2.1 * cols[:1] + p["hair_phase"])  # (m, 1, 48): cheap, drawn upright
    _blend(img, p["hair_tone"] + streaks, _cov(hair_d) * has_hair)

    # Face skin under the hairline, with side lighting and a darker rim.
    head_d = _ellipse_d(x, head_y, p["head_ax"], p["head_ay"])
    hairline = np.where(has_hair, p["hairline"], -99.0) + 2.8 * (ax / 11.0) ** 2
    face = _cov(np.maximum(head_d, hairline - y))
    r2 = (x / p["head_ax"]) ** 2 + (head_y / p["head_ay"]) ** 2
    _blend(img, skin + p["light"] * x / 12.0 - 0.18 * skin * r2 * r2, face)
    skin_px = (head_d <= 0) & (y >= hairline)
    _mark(regions, "hair", hair & has_hair)
    eye_y, eye_dx, nose_y = p["eye_y"], p["eye_dx"], p["nose_y"]
    _mark(regions, "forehead", skin_px & (y < eye_y))
    _mark(regions, "cheeks", skin_px & (y >= eye_y))

    # Each feature stays within a band of rows whatever the pose (shift, scale and rotation
    # move it by 6 px at most): drawing it on views of that band saves 40 % of the work.
    up, mid, lo = np.s_[:, :32], np.s_[:, 14:40], np.s_[:, 20:]
    x_u, y_u, ax_u, face_u, img_u, skin_u, reg_u = (a[up] for a in (x, y, ax, face, img, skin_px, regions))
    y_m, ax_m, face_m, img_m, skin_m, reg_m = (a[mid] for a in (y, ax, face, img, skin_px, regions))
    x_l, y_l, ax_l, face_l, img_l, skin_l, reg_l = (a[lo] for a in (x, y, ax, face, img, skin_px, regions))

    # Eye sockets and the nose's sides give the face depth.
    socket = np.exp(-(((ax_u - eye_dx) / 4.5) ** 2 + ((y_u - eye_y + 0.8) / 2.6) ** 2))
    img_u -= face_u * 0.16 * skin * socket
    nose_side = _cov(np.abs(ax_m - 2.3) - 0.3) * ((y_m > eye_y + 1) & (y_m < nose_y - 1))
    img_m -= face_m * 0.06 * skin * nose_side

    # Nose: nostrils, and (disgust) two wrinkles across the bridge.
    nostril = _cov(_ellipse_d(ax_m - 2.4, y_m - nose_y, 1.3, 0.8))
    _blend(img_m, 0.45 * skin, 0.85 * nostril * face_m)
    wrinkle = _cov(np.minimum(np.abs(y_m - eye_y - 3.2), np.abs(y_m - eye_y - 5.0)) - 0.45) * _cov(ax_m - 2.6)
    img_m -= face_m * p["wrinkle"] * 0.35 * skin * wrinkle
    t = np.clip((y_m - eye_y - 1.5) / np.maximum(nose_y - eye_y, 1.0), 0.0, 1.0)
    nose = skin_m & (y_m >= eye_y + 1.5) & (y_m <= nose_y + 1.8) & (ax_m <= 3.0 + 1.5 * t)
    _mark(reg_m, "nose", nose)

    # Raised cheeks (happy): apple highlight and nasolabial folds towards the mouth corners.
    mouth_y, mouth_w = p["mouth_y"], p["mouth_w"] + p["width"]
    cheek = p["cheeks"]
    apple = np.exp(-(((ax_l - 9.0) / 3.5) ** 2 + ((y_l - 28.5 + 2.0 * cheek) / 3.0) ** 2))
    fold = _cov(_segment_d(ax_l, y_l, 4.4, nose_y - 0.8, mouth_w + 0.8, mouth_y + p["corners"], 0.5, arch=-0.8))
    img_l += face_l * cheek * skin * (0.14 * apple - 0.35 * fold)

    # Mouth: lips around an opening between an upper and a lower curve; teeth in the opening.
    mxc = np.clip(x_l / np.maximum(mouth_w, 1.0), -1.0, 1.0)
    round_ = np.sqrt(1.0 - mxc * mxc)
    centre = mouth_y + p["corners"] * mxc * mxc
    raise_ = p["lip_raise"] * np.exp(-(((mxc - 0.35 * p["lip_side"]) / 0.45) ** 2))
    upper = centre - (p["open_up"] + 0.15) * round_ - raise_
    lower = centre + (p["open_down"] + 0.15) * round_
    across = _cov(np.abs(x_l) - mouth_w)
    inside = _cov(np.maximum(upper - y_l, y_l - lower)) * across
    _blend(img_l, 0.15 * skin, inside)
    teeth = inside * (y_l < upper + p["teeth"] * (lower - upper))
    _blend(img_l, np.minimum(skin + 50.0, 225.0), 0.9 * teeth)
    lip_t = np.maximum(p["lip_t"] + p["lips"], 0.6)
    lips = _cov(np.minimum(np.abs(y_l - upper), np.abs(y_l - lower)) - lip_t / 2) * across
    _blend(img_l, 0.5 * skin, 0.85 * lips * face_l)
    mouth = skin_l & (np.abs(x_l) <= mouth_w + 2.0) & (y_l >= upper - 2.2) & (y_l <= lower + 2.2)
    _mark(reg_l, "mouth", mouth)

    # Eyes: an opening (sclera) with an iris and a dark upper lid; narrowed, wide or raised lower lid.
    eye_b = np.maximum(p["eye_b"] + p["eye_open"], 0.35)
    ex, ey = ax_u - eye_dx, y_u - eye_y
    above = ey < 0
    eye_d = _ellipse_d(ex, ey, p["eye_a"], np.where(above, eye_b, eye_b * (1.0 - 0.6 * p["lower_lid"])))
    opening = _cov(eye_d)
    _blend(img_u, np.minimum(skin + 60.0, 235.0), opening)
    _blend(img_u, 0.2 * skin, _cov(np.sqrt(ex * ex + ey * ey) - p["iris"]) * opening)
    _blend(img_u, 0.3 * skin, 0.9 * _cov(np.abs(eye_d + 0.1) - 0.55) * (ey < 0.3))
    _mark(reg_u, "eyes", skin_u & (eye_d <= np.where(above, _F32(1.6), _F32(1.3))))

    # Brows: a thick stroke per side, inner end (near the nose) and outer end moved by the cues.
    brow_y = eye_y - p["brow_gap"]
    inner_x = 2.8 + p["brow_pull"]
    brow_d = _segment_d(ax_u, y_u, inner_x, brow_y + p["brow_inner"], inner_x + p["brow_len"],
                        brow_y + 0.3 + p["brow_outer"], p["brow_thick"] / 2, arch=0.5 + p["brow_arch"])
    _blend(img_u, np.minimum(p["hair_tone"], 0.45 * skin), 0.9 * _cov(brow_d) * face_u)
    _mark(reg_u, "brows", skin_u & (brow_d <= 1.6))

    # A hand: a palm and four fingers, in front of the face, placed in the image frame.
    hands = np.flatnonzero(p["occluded"][:, 0, 0] > 0)
    if len(hands):
        h = {k: v[hands] for k, v in p.items()}
        hx, hy = cols[None] - h["hand_x"], rows[None] - h["hand_y"]
        ca, sa = np.cos(h["hand_angle"]) / h["hand_size"], np.sin(h["hand_angle"]) / h["hand_size"]
        u, v = ca * hx + sa * hy, ca * hy - sa * hx
        hand_d = _ellipse_d(u, v, 6.0, 5.0)
        for off, length in zip((-3.9, -1.3, 1.3, 3.9), (7.0, 8.5, 8.0, 6.5)):
            hand_d = np.minimum(hand_d, _segment_d(u, v, off, -2.0, off, -2.0 - length, 1.25))
        sub = img[hands]
        _blend(sub, h["hand_tone"] + u, _cov(hand_d * h["hand_size"]))
        sub -= 0.25 * h["hand_tone"] * _cov(np.abs(hand_d + 0.6) - 0.6) * _cov(hand_d)
        img[hands] = sub
        sub_regions = regions[hands]
        _mark(sub_regions, "occluder", hand_d <= 0)
        regions[hands] = sub_regions

    # Camera: blur (a per-face 5-tap Gaussian, separable), contrast, noise.
    blurred = np.flatnonzero(p["blur"][:, 0, 0] > 0)
    if len(blurred):
        taps = np.arange(-2, 3, dtype=np.float32)
        kernel = np.exp(-0.5 * (taps[None] / p["blur"][blurred, 0]) ** 2)
        kernel /= kernel.sum(axis=1, keepdims=True)
        sub = img[blurred]
        for axis in (1, 2):
            pad = [(0, 0)] * 3
            pad[axis] = (2, 2)
            padded = np.pad(sub, pad, mode="edge")
            sub = sum(kernel[:, k, None, None] * np.take(padded, np.arange(k, k + size), axis=axis)
                      for k in range(5))
        img[blurred] = sub
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = mean + p["contrast"] * (img - mean) + p["noise"] * noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), regions


def _stream(seed, stream, chunk, probs):
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, chunk]))
    labels = _quota_labels(rng, probs, _CHUNK)
    params = _sample(rng, labels)
    noise = rng.standard_normal((_CHUNK, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return labels, params, noise


def _generate(n, seed, class_probs, stream):
    n = positive_int(n, "n", "fervis.synthetic.generate", low=0)
    seed = positive_int(seed, "seed", "fervis.synthetic.generate", low=0)
    from tqdm.auto import tqdm

    probs = _check_probs(class_probs)
    n = int(n)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    regions = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    n_chunks = -(-n // _CHUNK)
    for chunk in tqdm(range(n_chunks), desc="synthetic faces", disable=n < 10_000, leave=False):
        start = chunk * _CHUNK
        stop = min(n, start + _CHUNK)
        chunk_labels, params, noise = _stream(int(seed), stream, chunk, probs)
        m = stop - start
        # Render in small batches: arrays that fit in cache are faster than one big pass.
        for b in range(0, m, 100):
            e = min(m, b + 100)
            batch = {k: v[b:e, None, None] for k, v in params.items()}
            images[start + b:start + e], regions[start + b:start + e] = _render(batch, noise[b:e])
        labels[start:stop] = chunk_labels[:m]
    return images, labels, regions


def generate(n, seed=0, class_probs=None):
    """Draw ``n`` synthetic faces with labels and region maps.

    Parameters
    ----------
    n : int
        Number of faces.
    seed : int, default 0
        Faces are a pure function of ``(seed, index)``: ``generate(n, seed)`` returns the first
        ``n`` faces of one sequence, whatever ``n`` is.
    class_probs : sequence of 7 floats or None
        Class frequencies (normalised); ``None`` uses FER2013's Training frequencies
        (:data:`CLASS_PROBS`). Counts follow them as closely as integers allow in every block
        of 1000 faces.

    Returns
    -------
    images : ndarray uint8 ``(n, 48, 48)``
    labels : ndarray int64 ``(n,)``
        Indices into :data:`fervis.constants.CLASS_NAMES`.
    regions : ndarray uint8 ``(n, 48, 48)``
        Indices into :data:`REGION_NAMES`.

    Example
    -------
    >>> images, labels, regions = generate(16, seed=0)
    >>> images.shape, labels.dtype, bool(regions.max() < len(REGION_NAMES))
    ((16, 48, 48), dtype('int64'), True)
    """
    return _generate(n, seed, class_probs, stream=0)


def make_dataset(n_train=6000, n_test=1500, seed=0):
    """A labelled synthetic :class:`fervis.data.Dataset` with ``Training`` and ``PublicTest`` splits.

    Parameters
    ----------
    n_train, n_test : int
        Faces per split. The two splits are independent streams of one seed, so the test faces
        do not change with ``n_train``.
    seed : int, default 0

    Returns
    -------
    fervis.data.Dataset
        ``source="synthetic"``, with ``regions`` and ``region_names`` (:data:`REGION_NAMES`).

    Example
    -------
    >>> dataset = make_dataset(n_train=100, n_test=50)
    >>> dataset.counts().sum(axis=1).to_dict()
    {'Training': 100, 'PublicTest': 50}
    """
    from fervis.dataset import Dataset, fingerprint_arrays

    train = _generate(n_train, seed, None, stream=0)
    test = _generate(n_test, seed, None, stream=1)
    images, labels, regions = (np.concatenate([a, b]) for a, b in zip(train, test))
    splits = np.array(["Training"] * n_train + ["PublicTest"] * n_test)
    return Dataset(
        images=images, labels=labels, splits=splits, source="synthetic",
        fingerprint=fingerprint_arrays(images, labels, splits, regions),
        regions=regions, region_names=REGION_NAMES,
    )
