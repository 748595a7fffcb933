"""An image reward plugin: checks the pixels of a generated image against a described region.

The API example for rewards that look at images. A reward function receives a `RewardInput`; for
text-to-image rollouts `inp.image` is the decoded image as a uint8 H x W x 3 numpy array (sent from
the rollout worker through Ray's object store), `inp.prompt` the caption and `inp.gold` the row's
answer field. Configure it like any user reward:

    rewards:
      functions:
        - {name: region, weight: 1.0, tasks: [t2i], path: rewards.examples.region_colour:region_colour}

Gold (JSON): {"rgb": [r, g, b], "box": [x0, y0, x1, y1] as fractions of the image, "background": [r, g, b]}

    inside  = fraction of box pixels within `tol` of rgb (per channel)
    outside = fraction of the other pixels within `tol` of background
    metric="accuracy":  reward = w * inside + (1 - w) * outside    in [0, 1], w = inside_weight (0.5: a
                        blank canvas of the right background earns 0.5, the square on it 1.0)
    metric="iou":       reward = |C & B| / |C | B|                  C the pixels within `tol` of rgb, B the box:
                        the region drawn in the caption's colour against the region asked for; a blank
                        canvas, or the square in another colour or place, earns 0
"""

from __future__ import annotations

import json

import numpy as np

from rewards.api import RewardInput, RewardResult

MAX_PIXELS = 4096 * 4096


METRICS = ("accuracy", "iou")


def region_colour(inp: RewardInput, tol: int = 48, inside_weight: float = 0.5, metric: str = "accuracy") -> RewardResult:
    if inp.image is None:
        return RewardResult(0.0, "unparsable", "no image")
    img = np.asarray(inp.image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] * img.shape[1] > MAX_PIXELS:
        return RewardResult(0.0, "error", f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
    try:
        gold = json.loads(inp.gold or "")
        rgb = np.asarray(gold["rgb"], dtype=np.int16).reshape(3)
        background = np.asarray(gold.get("background", [0, 0, 0]), dtype=np.int16).reshape(3)
        x0, y0, x1, y1 = (float(v) for v in gold["box"])
    except (ValueError, KeyError, TypeError) as exc:
        return RewardResult(0.0, "error", f"region: bad gold {type(exc).__name__}: {str(exc)[:100]}")
    h, w = img.shape[:2]
    inside = np.zeros((h, w), dtype=bool)
    inside[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = True
    pix = img.astype(np.int16)
    match_in = (np.abs(pix - rgb) <= tol).all(-1)
    match_out = (np.abs(pix - background) <= tol).all(-1)
    part_in = match_in[inside].mean() if inside.any() else 1.0
    part_out = match_out[~inside].mean() if (~inside).any() else 1.0
    if not 0.0 <= inside_weight <= 1.0:
        return RewardResult(0.0, "error", f"region: inside_weight must lie in [0, 1], got {inside_weight}")
    if metric not in METRICS:
        return RewardResult(0.0, "error", f"region: metric must be one of {METRICS}, got {metric!r}")
    if metric == "iou":
        value = (match_in & inside).sum() / max(1, (match_in | inside).sum())
    else:
        value = inside_weight * part_in + (1.0 - inside_weight) * part_out
    return RewardResult(float(value), "ok", f"inside={part_in:.2f} outside={part_out:.2f}")
