"""tinyworld scenes: the image half of the embedded data set (method §10).

Owns: the scene vocabulary (shapes, colours, 3x3 grid cells, sizes, backgrounds), seeded sampling of
scenes per split with held-out (colour, shape) compositions, rendering a scene to an RGB uint8 array,
captioning a scene in plain English, parsing such captions back into attributes, and reading/writing
the image-folder layout (`images/{i:06d}.png` + `captions.jsonl`) that user image-text folders share.

Does not own: tokenization, sharding, mixing or loading into batches (see `data/`), speech or the
text-only corpus, and any image-side attribute detector for evaluation.

Determinism: scene i of (split, seed) is drawn from its own generator seeded with
(split stream, seed, i), so a scene does not depend on how many scenes were asked for, and the three
splits draw from independent SeedSequence streams. Rendering depends only on the scene (its `seed`
drives position jitter and background texture) and the output size; jitter is drawn in grid-cell units
before any size-dependent draw, so one scene looks the same at 32 and at 64 pixels.

Held-out compositions: the (colour, shape) pairs in `HELDOUT_PAIRS` never occur in a train scene.
In val/test, exactly floor((i + 1) * f) - floor(i * f) decides whether scene i contains one (f is the
held-out fraction), so every prefix of a split has floor(n * f) such scenes; every other object there is
drawn from the train pairs, so a held-out scene carries exactly one unseen composition and the rest of
val/test is in-distribution.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trimdm.data.media import read_image

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# RGB chosen far apart (pairwise L2 > 110) and away from every background tone (L2 > 90).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 205, 30),
    "purple": (150, 60, 190),
    "cyan": (30, 195, 205),
}
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 234),
    "cream": (236, 226, 204),
    "light grey": (196, 198, 200),
    "dark grey": (64, 66, 72),
}
SPLITS: tuple[str, ...] = ("train", "val", "test")

# One held-out colour per shape, four different colours: every shape and every colour still occurs in
# training, only these compositions do not.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "cross"),
    ("blue", "circle"),
    ("yellow", "square"),
)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLORS for s in SHAPES if (c, s) not in HELDOUT_PAIRS
)
DEFAULT_HELDOUT_FRACTION = 0.25

# Cell phrases carry their own preposition so that no phrase is a prefix of another or of a relation.
LOCATIONS: dict[tuple[int, int], str] = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the centre",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}
RELATIONS: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}

# Templates fill: {a} "a small red circle", {a_bare} "a red circle" (size omitted), {a_loc} cell phrase,
# {a_rel_b} relation of a to b, {b_rel_a} relation of b to a. Objects always appear in scene order.
ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a} {a_loc}",
    "there is {a} {a_loc}",
    "an image of {a} {a_loc}",
    "{a_loc} there is {a}",
    "{a_bare} {a_loc}",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a} {a_loc} and {b} {b_loc}",
    "{a} {a_rel_b} {b_bare}",
    "there is {a} {a_loc} and {b} {b_rel_a} it",
    "{a_bare} {a_loc} with {b} {b_rel_a} it",
)

# Geometry in grid-cell units (the image is 3x3 cells). Radius + max jitter < 0.5, so objects stay
# inside their cell and two objects never overlap.
_RADIUS = {"small": 0.3, "large": 0.42}
_JITTER = 0.06
_SUPERSAMPLE = 4
_MIN_SIZE = 16
_TEXTURE_GRID = 4  # low-frequency background field, drawn on a fixed grid so it is size-independent
_TEXTURE_MAX_AMPLITUDE = 7.0  # grey levels; keeps backgrounds low-contrast next to the objects
_NOISE_STD = 2.0
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    row: int
    col: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {tuple(COLORS)}, got {self.color!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        for name in ("row", "col"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 2:
                raise ValueError(f"{name} must be an int in 0..2, got {v!r}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not all(isinstance(o, Obj) for o in self.objects):
            raise ValueError("objects must be a tuple of Obj")
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a scene holds 1 or 2 objects, got {len(self.objects)}")
        cells = [(o.row, o.col) for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"objects must sit in different grid cells, got {cells}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {tuple(BACKGROUNDS)}, got {self.background!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    def to_json(self) -> dict[str, Any]:
        objects = [asdict(o) for o in self.objects]
        return {"objects": objects, "background": self.background, "seed": self.seed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scene:
        if not isinstance(d, dict) or set(d) != {"objects", "background", "seed"}:
            raise ValueError(f"scene JSON needs exactly keys objects, background, seed; got {d!r}")
        if not isinstance(d["objects"], list) or not all(isinstance(o, dict) for o in d["objects"]):
            raise ValueError(f"scene JSON 'objects' must be a list of objects, got {d['objects']!r}")
        try:
            objects = tuple(Obj(**o) for o in d["objects"])
        except TypeError as e:  # unknown or missing field
            raise ValueError(f"bad object in scene JSON: {e}") from None
        return cls(objects=objects, background=d["background"], seed=d["seed"])


# ---------------------------------------------------------------------------------------------------
# Sampling


def check_world(sizes, backgrounds, colors, prefix: str = "") -> None:
    """A smaller world's vocabulary: distinct values among SIZES, BACKGROUNDS and COLORS, with colours that
    keep at least one held-out pair. `prefix` goes before each key in the error (a config section)."""
    for name, chosen, known in (("sizes", sizes, SIZES), ("backgrounds", backgrounds, tuple(BACKGROUNDS)),
                                ("colors", colors, tuple(COLORS))):
        if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(known):
            raise ValueError(f"{prefix}{name}={','.join(map(str, chosen))}: expected distinct values among "
                             f"{', '.join(known)}")
    if not any(c in colors for c, _ in HELDOUT_PAIRS):
        raise ValueError(f"{prefix}colors={','.join(colors)} keep none of the held-out pairs {HELDOUT_PAIRS}")


def sample_scenes(
    n: int,
    split: str,
    seed: int,
    two_object_fraction: float = 0.5,
    heldout_fraction: float | None = None,
    sizes: tuple[str, ...] = SIZES,
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS),
    colors: tuple[str, ...] = tuple(COLORS),
) -> list[Scene]:
    """n scenes of `split`; scene i depends only on (split, seed, i).

    heldout_fraction: share of val/test scenes that contain a held-out (colour, shape) pair; None means
    DEFAULT_HELDOUT_FRACTION. Train scenes never contain one, so for train it must be None or 0.
    sizes, backgrounds, colors: the subsets of SIZES, BACKGROUNDS and COLORS the scenes draw from (a
    smaller world; the colours must keep at least one held-out pair); with all of them the draws are
    those of every earlier version.
    """
    check_world(sizes, backgrounds, colors)
    train_pairs = [p for p in TRAIN_PAIRS if p[0] in colors]
    heldout_pairs = [p for p in HELDOUT_PAIRS if p[0] in colors]
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"two_object_fraction must lie in [0, 1], got {two_object_fraction}")
    if split == "train":
        if heldout_fraction not in (None, 0, 0.0):
            raise ValueError(
                f"train scenes never contain held-out pairs; got heldout_fraction={heldout_fraction}"
            )
        f = 0.0
    else:
        f = DEFAULT_HELDOUT_FRACTION if heldout_fraction is None else heldout_fraction
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"heldout_fraction must lie in [0, 1], got {f}")

    scenes = []
    for i in range(n):
        rng = np.random.default_rng([_SPLIT_STREAM[split], seed, i])
        has_heldout = math.floor((i + 1) * f) > math.floor(i * f)
        n_obj = 2 if rng.random() < two_object_fraction else 1
        pairs = [train_pairs[k] for k in rng.integers(len(train_pairs), size=n_obj)]
        if has_heldout:
            pairs[rng.integers(n_obj)] = heldout_pairs[rng.integers(len(heldout_pairs))]
        cells = rng.choice(9, size=n_obj, replace=False)
        drawn = rng.integers(len(sizes), size=n_obj)
        objects = tuple(
            Obj(shape=s, color=c, size=sizes[z], row=int(cell) // 3, col=int(cell) % 3)
            for (c, s), cell, z in zip(pairs, cells, drawn)
        )
        background = backgrounds[rng.integers(len(backgrounds))]
        scenes.append(Scene(objects=objects, background=background, seed=int(rng.integers(2**63 - 1))))
    return scenes


def has_heldout_pair(scene: Scene) -> bool:
    return any((o.color, o.shape) in HELDOUT_PAIRS for o in scene.objects)


# ---------------------------------------------------------------------------------------------------
# Rendering


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < _MIN_SIZE:
        raise ValueError(f"size must be an int >= {_MIN_SIZE}, got {size!r}")


def layout(scene: Scene, size: int = 32) -> list[tuple[float, float, float]]:
    """Per object (centre_y, centre_x, radius) in pixels, pixel (y, x) covering [y, y+1) x [x, x+1)."""
    _check_size(size)
    rng = np.random.default_rng([scene.seed, 0])
    jitter_O2 = rng.uniform(-_JITTER, _JITTER, size=(len(scene.objects), 2))
    cell = size / 3
    return [
        ((o.row + 0.5 + jy) * cell, (o.col + 0.5 + jx) * cell, _RADIUS[o.size] * cell)
        for o, (jy, jx) in zip(scene.objects, jitter_O2)
    ]


# Shape masks in unit coordinates: u (1, W) rightwards, v (H, 1) downwards, object radius = 1.
def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # 0.86 rather than 1: a full-radius square reads as much bigger than a circle of the same radius.
    return (np.abs(u) <= 0.86) & (np.abs(v) <= 0.86)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Upward, apex at v=-1, base at v=0.9 with half-width 1: as large as fits the radius, so a small
    # triangle is not much smaller in area than the other small shapes; contains the centre with margin.
    return (v <= 0.9) & (np.abs(u) <= (v + 1.0) / 1.9)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Arm half-width 0.34 keeps the arms about 2 px wide for a small cross at 32x32.
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))


_SHAPE_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross}


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights that linearly interpolate n_in knots across n_out pixels."""
    t_N = np.linspace(0.0, n_in - 1, n_out)
    lo_N = np.minimum(np.floor(t_N).astype(int), n_in - 2)
    w_N = t_N - lo_N
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo_N] = 1.0 - w_N
    m[np.arange(n_out), lo_N + 1] = w_N
    return m


def _background(scene: Scene, size: int) -> np.ndarray:
    rng = np.random.default_rng([scene.seed, 1])
    # Fixed-count draws first so the texture's shape is the same at every output size.
    amplitude = rng.uniform(0.0, _TEXTURE_MAX_AMPLITUDE)
    knots_GG = rng.uniform(-1.0, 1.0, size=(_TEXTURE_GRID, _TEXTURE_GRID))
    interp_HG = _bilinear_matrix(size, _TEXTURE_GRID)
    field_HW = amplitude * (interp_HG @ knots_GG @ interp_HG.T)
    noise_HW = rng.normal(0.0, _NOISE_STD, size=(size, size))
    tone_3 = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    return tone_3 + (field_HW + noise_HW).astype(np.float32)[:, :, None]


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """RGB image (size, size, 3) uint8; edges anti-aliased by 4x4 box-filtered supersampling."""
    _check_size(size)
    img_HW3 = _background(scene, size)
    s = _SUPERSAMPLE
    for o, (cy, cx, r) in zip(scene.objects, layout(scene, size)):
        # Only the object's pixel bounding box is supersampled, which keeps rendering cheap.
        y0, y1 = max(0, math.floor(cy - r)), min(size, math.ceil(cy + r))
        x0, x1 = max(0, math.floor(cx - r)), min(size, math.ceil(cx + r))
        h, w = y1 - y0, x1 - x0
        v_H1 = ((y0 + (np.arange(h * s) + 0.5) / s - cy) / r)[:, None]
        u_1W = ((x0 + (np.arange(w * s) + 0.5) / s - cx) / r)[None, :]
        mask = _SHAPE_MASKS[o.shape](u_1W, v_H1)
        cover_hw1 = mask.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)[:, :, None]
        color_3 = np.asarray(COLORS[o.color], dtype=np.float32)
        patch = img_HW3[y0:y1, x0:x1]
        img_HW3[y0:y1, x0:x1] = patch + cover_hw1 * (color_3 - patch)
    return np.clip(np.rint(img_HW3), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(o: Obj, with_size: bool) -> str:
    words = f"{o.size} {o.color} {o.shape}" if with_size else f"{o.color} {o.shape}"
    return f"{_article(words)} {words}"


def relation_holds(a: Obj, b: Obj, rel: str) -> bool:
    """Whether `a rel b` is true on the grid (strictly by cell row/column)."""
    if rel not in RELATIONS:
        raise ValueError(f"relation must be one of {tuple(RELATIONS)}, got {rel!r}")
    return {
        "left of": a.col < b.col,
        "right of": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
    }[rel]


def _pick_relation(a: Obj, b: Obj, rng: np.random.Generator) -> str:
    true_rels = [r for r in RELATIONS if relation_holds(a, b, r)]
    assert true_rels, "two objects in different cells always differ in row or column"
    return true_rels[rng.integers(len(true_rels))]


def caption(scene: Scene, rng: np.random.Generator, template: int | None = None) -> str:
    """An English caption of `scene`; template indexes ONE_/TWO_OBJECT_TEMPLATES, None draws one."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    templates = ONE_OBJECT_TEMPLATES if len(scene.objects) == 1 else TWO_OBJECT_TEMPLATES
    if template is None:
        template = int(rng.integers(len(templates)))
    elif not isinstance(template, int) or not 0 <= template < len(templates):
        raise ValueError(f"template must be an int in [0, {len(templates)}), got {template!r}")
    a = scene.objects[0]
    fields = {"a": _phrase(a, True), "a_bare": _phrase(a, False), "a_loc": LOCATIONS[a.row, a.col]}
    if len(scene.objects) == 2:
        b = scene.objects[1]
        fields |= {"b": _phrase(b, True), "b_bare": _phrase(b, False), "b_loc": LOCATIONS[b.row, b.col]}
        fields["a_rel_b"] = RELATIONS[_pick_relation(a, b, rng)]
        fields["b_rel_a"] = RELATIONS[_pick_relation(b, a, rng)]
    return templates[template].format(**fields)


def _alternation(words) -> str:
    # Longest first so no alternative shadows a longer one.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_LOCATION_ALIASES = {phrase: cell for cell, phrase in LOCATIONS.items()}
_LOCATION_ALIASES |= {"in the center": (1, 1), "in the middle": (1, 1)}
_MENTION_RE = re.compile(
    rf"\b(?:a|an)\s+(?:(?P<size>{_alternation(SIZES)})\s+)?"
    rf"(?P<color>{_alternation(COLORS)})\s+(?P<shape>{_alternation(SHAPES)})\b"
)
_LOCATION_RE = re.compile(rf"\b(?P<loc>{_alternation(_LOCATION_ALIASES)})\b")
_RELATION_RE = re.compile(
    rf"\b(?P<rel>{_alternation(RELATIONS.values())})\s+(?:(?P<it>it)\b|(?=(?:a|an)\s))"
)
_RELATION_NAMES = {phrase: name for name, phrase in RELATIONS.items()}


def parse_caption(text: str) -> list[dict[str, Any]]:
    """Attributes mentioned in a caption, one dict per object mention in order of appearance.

    Each dict has "shape" and "color", plus "size", "row"/"col" and "relation"/"anchor" when mentioned;
    {"relation": "left of", "anchor": 1} means this object is left of object 1. Rules: an object mention
    is "a|an [size] colour shape"; a cell phrase belongs to the nearest preceding mention (or the next
    one if none precedes); "REL it" relates a mention to the previous mention, "REL a ..." to the next.
    Unknown words are ignored. Raises ValueError when the caption is contradictory or dangling.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a str, got {type(text).__name__}")
    text = text.lower()
    mentions = list(_MENTION_RE.finditer(text))
    objects = []
    for m in mentions:
        d: dict[str, Any] = {"shape": m["shape"], "color": m["color"]}
        if m["size"]:
            d["size"] = m["size"]
        objects.append(d)
    if not objects:
        return []

    def preceding(pos: int) -> int | None:
        idx = [k for k, m in enumerate(mentions) if m.end() <= pos]
        return idx[-1] if idx else None

    for lm in _LOCATION_RE.finditer(text):
        k = preceding(lm.start())
        k = 0 if k is None else k  # a phrase before every mention introduces the first one
        if "row" in objects[k]:
            raise ValueError(f"object {k} is given two locations in {text!r}")
        objects[k]["row"], objects[k]["col"] = _LOCATION_ALIASES[lm["loc"]]
    for rm in _RELATION_RE.finditer(text):
        k = preceding(rm.start())
        if k is None:
            raise ValueError(f"relation {rm['rel']!r} has no subject in {text!r}")
        anchor = k - 1 if rm["it"] else k + 1
        if not 0 <= anchor < len(objects):
            raise ValueError(f"relation {rm['rel']!r} has no anchor object in {text!r}")
        if "relation" in objects[k]:
            raise ValueError(f"object {k} is given two relations in {text!r}")
        objects[k]["relation"], objects[k]["anchor"] = _RELATION_NAMES[rm["rel"]], anchor
    return objects


def is_caption(text: str) -> bool:
    """Whether a text speaks a scene: the caption grammar finds an object in it (tinyworld's speech mixes
    captions with sentences, which it does not)."""
    try:
        return bool(parse_caption(text))
    except ValueError:
        return False


def caption_errors(text: str, scene: Scene) -> list[str]:
    """Every way in which `text` misdescribes `scene` (empty when all mentioned attributes match).

    Mentions are matched to scene objects by order. Attributes a caption leaves out are not errors.
    """
    try:
        parsed = parse_caption(text)
    except ValueError as e:
        return [str(e)]
    if len(parsed) != len(scene.objects):
        return [f"caption mentions {len(parsed)} objects, scene has {len(scene.objects)}"]
    errors = []
    for k, (d, o) in enumerate(zip(parsed, scene.objects)):
        for key in ("shape", "color", "size", "row", "col"):
            if key in d and d[key] != getattr(o, key):
                errors.append(f"object {k}: {key} {d[key]!r} != {getattr(o, key)!r}")
        if "relation" in d and not relation_holds(o, scene.objects[d["anchor"]], d["relation"]):
            errors.append(f"object {k}: not {d['relation']} object {d['anchor']}")
    return errors


# What a caption got wrong, by kind: an attribute of an object, a relation, the number of objects, or
# nothing readable (a caption that does not parse, an image the judge cannot read as a scene).
ERROR_KINDS: tuple[str, ...] = ("shape", "color", "size", "location", "relation", "count", "unreadable")


def error_kind(message: str) -> str:
    """The kind (ERROR_KINDS) of one message of caption_errors or of the image judge's judge_caption."""
    m = re.match(r"object \d+: (shape|color|size|row|col|not) ", message)
    if m:
        return {"row": "location", "col": "location", "not": "relation"}.get(m.group(1), m.group(1))
    return "count" if message.startswith("caption mentions ") else "unreadable"


# ---------------------------------------------------------------------------------------------------
# Image folder: images/{i:06d}.png + captions.jsonl with {"file", "caption", "scene"?} per line


def write_image_folder(out_dir: str | Path, scenes: list[Scene], size: int = 32, seed: int = 0) -> Path:
    """Render and caption `scenes` into out_dir; captions draw from one generator seeded by `seed`.

    Overwrites captions.jsonl and same-named images; returns the captions.jsonl path.
    """
    _check_size(size)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = out / "captions.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, scene in enumerate(scenes):
            rel = f"images/{i:06d}.png"
            Image.fromarray(render(scene, size)).save(out / rel)
            record = {"file": rel, "caption": caption(scene, rng), "scene": scene.to_json()}
            fh.write(json.dumps(record) + "\n")
    return path


def read_image_folder(
    folder: str | Path, strict: bool = False
) -> tuple[list[tuple[np.ndarray, str, Scene | None]], dict[str, Any]]:
    """Items (image HxWx3 uint8, caption, scene or None) from a folder in the layout above.

    Bad entries are skipped and counted in the report (read, skipped_corrupt, skipped_empty_caption,
    skipped_missing_file, skipped_bad_record) with the first few listed under "problems" as
    {"file", "reason"}; with strict=True the first one raises ValueError instead. Images keep their
    own size and are converted to RGB. The "scene" key is optional (user folders lack it).
    """
    root = Path(folder)
    index = root / "captions.jsonl"
    if not index.is_file():
        raise ValueError(f"{index} not found: an image folder needs captions.jsonl")
    report: dict[str, Any] = {
        "read": 0,
        "skipped_corrupt": 0,
        "skipped_empty_caption": 0,
        "skipped_missing_file": 0,
        "skipped_bad_record": 0,
        "problems": [],
    }
    items = []

    def skip(kind: str, file: str, reason: str) -> None:
        if strict:
            raise ValueError(f"{root / file}: {reason}")
        report[kind] += 1
        if len(report["problems"]) < _MAX_PROBLEMS:
            report["problems"].append({"file": file, "reason": reason})

    with index.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"captions.jsonl:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skip("skipped_bad_record", where, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("file"), str) or not record["file"]:
                skip("skipped_bad_record", where, "record lacks a 'file' string")
                continue
            file = record["file"]
            text = record.get("caption")
            if not isinstance(text, str) or not text.strip():
                skip("skipped_empty_caption", file, "empty or missing caption")
                continue
            scene = None
            if record.get("scene") is not None:
                try:
                    scene = Scene.from_json(record["scene"])
                except ValueError as e:
                    skip("skipped_bad_record", file, f"invalid scene ({e})")
                    continue
            path = root / file
            if not path.is_file():
                skip("skipped_missing_file", file, "file not found")
                continue
            try:
                image = read_image(path)
            except ValueError as e:
                skip("skipped_corrupt", file, str(e).removeprefix(f"{path}: "))
                continue
            items.append((image, text, scene))
            report["read"] += 1
    return items, report
