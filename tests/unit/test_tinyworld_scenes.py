"""tinyworld scenes: determinism, held-out compositions, captions that parse back, rendering that matches
the declared attributes, and the image-folder reader/writer with its skip accounting."""

import colorsys
import itertools
import json

import numpy as np
import pytest

from trimdm.data.tinyworld.scenes import (
    BACKGROUNDS,
    COLORS,
    HELDOUT_PAIRS,
    ONE_OBJECT_TEMPLATES,
    SHAPES,
    TRAIN_PAIRS,
    TWO_OBJECT_TEMPLATES,
    Obj,
    Scene,
    caption,
    caption_errors,
    error_kind,
    has_heldout_pair,
    is_caption,
    layout,
    parse_caption,
    read_image_folder,
    relation_holds,
    render,
    sample_scenes,
    write_image_folder,
)


def _pairs(scenes):
    return {(o.color, o.shape) for s in scenes for o in s.objects}


# --- sampling ----------------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_prefix_stable():
    a = sample_scenes(200, "train", 7)
    assert a == sample_scenes(200, "train", 7)
    assert a[:50] == sample_scenes(50, "train", 7)
    assert a != sample_scenes(200, "train", 8)
    assert [s.seed for s in a] != [s.seed for s in sample_scenes(200, "val", 7)]


def test_splits_draw_from_disjoint_seeds():
    seeds = {split: {s.seed for s in sample_scenes(2000, split, 0)} for split in ("train", "val", "test")}
    assert all(len(v) == 2000 for v in seeds.values())
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]


def test_train_never_holds_a_heldout_pair_but_covers_every_train_pair():
    scenes = sample_scenes(4000, "train", 0)
    assert not _pairs(scenes) & set(HELDOUT_PAIRS)
    assert _pairs(scenes) == set(TRAIN_PAIRS)
    assert len(TRAIN_PAIRS) + len(HELDOUT_PAIRS) == len(COLORS) * len(SHAPES)


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("fraction", [None, 0.0, 0.4])
def test_eval_splits_hold_the_requested_share_of_heldout_scenes(split, fraction):
    n = 1000
    scenes = sample_scenes(n, split, 3, heldout_fraction=fraction)
    f = 0.25 if fraction is None else fraction
    held = [s for s in scenes if has_heldout_pair(s)]
    assert len(held) == int(n * f)
    # The other scenes are in-distribution; together the split shows every held-out pair.
    assert not _pairs([s for s in scenes if not has_heldout_pair(s)]) & set(HELDOUT_PAIRS)
    if f > 0:
        assert set(HELDOUT_PAIRS) <= _pairs(held)


def test_object_count_and_cells():
    assert all(len(s.objects) == 1 for s in sample_scenes(100, "train", 0, two_object_fraction=0.0))
    both = sample_scenes(300, "train", 0, two_object_fraction=1.0)
    assert all(len(s.objects) == 2 for s in both)
    assert all((s.objects[0].row, s.objects[0].col) != (s.objects[1].row, s.objects[1].col) for s in both)
    mixed = sample_scenes(2000, "train", 0)
    assert 0.45 < np.mean([len(s.objects) == 2 for s in mixed]) < 0.55  # binomial sd is 0.011
    assert {(o.row, o.col) for s in mixed for o in s.objects} == set(itertools.product(range(3), range(3)))
    assert {o.size for s in mixed for o in s.objects} == {"small", "large"}
    assert {s.background for s in mixed} == set(BACKGROUNDS)


def test_a_smaller_world_draws_only_its_sizes_backgrounds_and_colours():
    small = sample_scenes(500, "val", 0, sizes=("large",), backgrounds=("white", "dark grey"),
                          colors=("red", "green", "cyan"))
    assert {o.size for s in small for o in s.objects} == {"large"}
    assert {s.background for s in small} == {"white", "dark grey"}
    assert {o.color for s in small for o in s.objects} == {"red", "green", "cyan"}
    assert {(o.color, o.shape) for s in small for o in s.objects if has_heldout_pair(s)} >= {
        ("red", "triangle"), ("green", "cross")}  # the held-out pairs of the kept colours remain
    assert {o.shape for s in sample_scenes(500, "train", 0, colors=("red", "green", "cyan"))
            for o in s.objects} == set(SHAPES)
    # naming every size, background and colour is the default: the scenes of every earlier version
    assert sample_scenes(50, "train", 3, sizes=("small", "large"), backgrounds=tuple(BACKGROUNDS),
                         colors=tuple(COLORS)) == sample_scenes(50, "train", 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=-1, split="train", seed=0),
        dict(n=3, split="dev", seed=0),
        dict(n=3, split="train", seed=-1),
        dict(n=3, split="train", seed=0, two_object_fraction=1.5),
        dict(n=3, split="train", seed=0, heldout_fraction=0.3),
        dict(n=3, split="val", seed=0, heldout_fraction=-0.1),
        dict(n=3, split="train", seed=0, sizes=()),
        dict(n=3, split="train", seed=0, sizes=("huge",)),
        dict(n=3, split="train", seed=0, backgrounds=("white", "white")),
        dict(n=3, split="train", seed=0, backgrounds=("black",)),
        dict(n=3, split="train", seed=0, colors=("purple", "cyan")),  # keeps no held-out pair
    ],
)
def test_sample_scenes_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_scenes(**kwargs)


def test_scene_validation_and_json_round_trip():
    scene = sample_scenes(1, "train", 0, two_object_fraction=1.0)[0]
    assert Scene.from_json(json.loads(json.dumps(scene.to_json()))) == scene
    o = Obj("circle", "red", "small", 0, 0)
    with pytest.raises(ValueError):
        Scene((o, Obj("square", "blue", "large", 0, 0)), "white", 0)  # same cell
    with pytest.raises(ValueError):
        Obj("hexagon", "red", "small", 0, 0)
    with pytest.raises(ValueError):
        Obj("circle", "red", "small", 3, 0)
    with pytest.raises(ValueError):
        Scene((o,), "black", 0)
    with pytest.raises(ValueError):
        Scene.from_json({"objects": [{"shape": "circle"}], "background": "white", "seed": 0})


# --- captions ----------------------------------------------------------------------------------------


def _assert_parse_matches(text, scene):
    parsed = parse_caption(text)
    assert len(parsed) == len(scene.objects), text
    for d, o in zip(parsed, scene.objects):
        # Colour and shape are always named (held-out evaluation depends on them).
        assert (d["color"], d["shape"]) == (o.color, o.shape), text
        for key in ("size", "row", "col"):
            if key in d:
                assert d[key] == getattr(o, key), text
        if "relation" in d:
            assert relation_holds(o, scene.objects[d["anchor"]], d["relation"]), text
    assert caption_errors(text, scene) == []


def test_every_template_parses_back_to_the_scene():
    rng = np.random.default_rng(0)
    ones = sample_scenes(200, "val", 1, two_object_fraction=0.0)
    twos = sample_scenes(200, "val", 1, two_object_fraction=1.0)
    for scenes, templates in ((ones, ONE_OBJECT_TEMPLATES), (twos, TWO_OBJECT_TEMPLATES)):
        for t in range(len(templates)):
            for scene in scenes:
                _assert_parse_matches(caption(scene, rng, template=t), scene)


def test_random_captions_parse_back_and_mention_locations_or_relations():
    rng = np.random.default_rng(1)
    texts = set()
    for scene in sample_scenes(1500, "train", 2):
        text = caption(scene, rng)
        texts.add(text)
        _assert_parse_matches(text, scene)
        parsed = parse_caption(text)
        # Each caption places the objects: a cell for the first, a cell or relation for the second.
        assert "row" in parsed[0] or "relation" in parsed[0]
        if len(parsed) == 2:
            assert "row" in parsed[1] or "relation" in parsed[0] or "relation" in parsed[1]
    assert len(texts) > 1000


def test_parse_recovers_relations_and_detects_wrong_captions():
    scene = Scene((Obj("circle", "red", "small", 0, 0), Obj("square", "blue", "large", 2, 2)), "white", 0)
    assert parse_caption("A small red circle to the left of a blue square") == [
        {"shape": "circle", "color": "red", "size": "small", "relation": "left of", "anchor": 1},
        {"shape": "square", "color": "blue"},
    ]
    assert parse_caption("there is a small red circle in the top left and a large blue square below it") == [
        {"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0},
        {"shape": "square", "color": "blue", "size": "large", "relation": "below", "anchor": 0},
    ]
    assert caption_errors("a small red circle to the left of a blue square", scene) == []
    assert caption_errors("a small red circle to the right of a blue square", scene)
    rest = " and a large blue square in the bottom right"
    assert caption_errors("a small red circle in the top left" + rest, scene) == []
    assert caption_errors("a small green circle in the top left" + rest, scene)
    assert caption_errors("a large red circle in the top left" + rest, scene)
    assert caption_errors("a small red square in the top left" + rest, scene)
    assert caption_errors("a small red circle at the top" + rest, scene)
    assert caption_errors("a small red circle in the top left", scene)  # one object missing
    with pytest.raises(ValueError):
        parse_caption("a red circle in the top left in the centre")
    with pytest.raises(ValueError):
        parse_caption("a red circle above it")
    assert parse_caption("nothing to see here") == []


def test_every_error_message_has_its_kind():
    scene = Scene((Obj("circle", "red", "small", 0, 0), Obj("square", "blue", "large", 2, 2)), "white", 0)
    rest = " and a large blue square in the bottom right"
    cases = {"a small green circle in the top left" + rest: {"color"},
             "a large red circle in the top left" + rest: {"size"},
             "a small red square in the top left" + rest: {"shape"},
             "a small red circle at the top" + rest: {"location"},
             "a small red circle to the right of a blue square": {"relation"},
             "a small red circle in the top left": {"count"},
             "a large green circle at the top" + rest: {"size", "color", "location"},
             "a red circle above it": {"unreadable"}}
    for text, kinds in cases.items():
        errors = caption_errors(text, scene)
        assert errors and {error_kind(e) for e in errors} == kinds, (text, errors)
    from trimdm.data.tinyworld.judges.image import judge_caption

    assert [error_kind(e) for e in judge_caption("a red circle", None)] == ["unreadable"]  # no scene read


# --- rendering ---------------------------------------------------------------------------------------


def test_render_is_deterministic_and_well_formed():
    scene = sample_scenes(1, "train", 5)[0]
    for size in (32, 64):
        img = render(scene, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert np.array_equal(img, render(scene, size))
    with pytest.raises(ValueError):
        render(scene, 8)


def test_palette_hues_match_colour_names():
    # Independent of the renderer: each RGB value must be the hue its English name says, saturated,
    # and far from the others, or captions would describe colours a viewer does not see.
    hue_ranges = {"red": (345, 15), "yellow": (40, 60), "green": (100, 150), "cyan": (170, 195),
                  "blue": (210, 240), "purple": (260, 300)}
    assert set(hue_ranges) == set(COLORS)
    for name, rgb in COLORS.items():
        h, _, sat = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
        lo, hi = hue_ranges[name]
        deg = h * 360
        assert (lo <= deg <= hi) if lo < hi else (deg >= lo or deg <= hi), (name, deg)
        assert sat > 0.5, name
    for a, b in itertools.combinations(COLORS.values(), 2):
        assert np.linalg.norm(np.subtract(a, b)) > 100


@pytest.mark.parametrize("size", [32, 64])
def test_rendered_colour_at_each_object_centre_is_the_declared_colour(size):
    palette = {**COLORS, **{f"bg:{k}": v for k, v in BACKGROUNDS.items()}}
    names = list(palette)
    palette_P3 = np.array([palette[k] for k in names], dtype=float)
    for scene in sample_scenes(300, "test", 0):
        img = render(scene, size).astype(float)
        for o, (cy, cx, _) in zip(scene.objects, layout(scene, size)):
            pixel_3 = img[int(cy), int(cx)]
            nearest = names[int(np.argmin(((palette_P3 - pixel_3) ** 2).sum(1)))]
            assert nearest == o.color, (scene, pixel_3)
            # Objects are flat colour; only anti-aliasing at the centre pixel's corner could move it.
            assert np.abs(pixel_3 - COLORS[o.color]).max() <= 20, (scene, pixel_3)


def test_objects_stay_in_their_cell_and_background_is_low_contrast():
    for scene in sample_scenes(300, "train", 4):
        for o, (cy, cx, r) in zip(scene.objects, layout(scene, 32)):
            cell = 32 / 3
            assert o.row * cell <= cy - r and cy + r <= (o.row + 1) * cell
            assert o.col * cell <= cx - r and cx + r <= (o.col + 1) * cell
    blank = Scene((Obj("circle", "red", "small", 0, 0),), "white", 0)
    corner_HW3 = render(blank, 64)[32:, 32:].astype(float)  # far from the object
    assert np.abs(corner_HW3 - BACKGROUNDS["white"]).max() < 25


def test_small_shapes_are_distinguishable_at_32():
    # Coverage of each shape, read back from the image; every pair must differ by >= 4 pixels of area
    # (about 15% of a small object), so shape is recoverable from a 32x32 render.
    bg, col = np.array(BACKGROUNDS["white"], float), np.array(COLORS["red"], float)
    contrast = col - bg
    for seed in range(3):
        images = {s: render(Scene((Obj(s, "red", "small", 1, 1),), "white", seed), 32) for s in SHAPES}
        cover = {s: (img - bg) @ contrast / (contrast @ contrast) for s, img in images.items()}
        for a, b in itertools.combinations(SHAPES, 2):
            assert np.abs(cover[a] - cover[b]).sum() >= 4.0, (a, b, seed)


# --- image folder ------------------------------------------------------------------------------------


def test_image_folder_round_trip(tmp_path):
    scenes = sample_scenes(6, "val", 0)
    write_image_folder(tmp_path, scenes, size=32, seed=3)
    items, report = read_image_folder(tmp_path)
    assert report["read"] == 6 and report["problems"] == []
    assert all(report[k] == 0 for k in report if k.startswith("skipped"))
    rng = np.random.default_rng(3)
    for (img, text, scene), expected in zip(items, scenes):
        assert scene == expected
        assert np.array_equal(img, render(expected, 32))
        assert text == caption(expected, rng)
        assert caption_errors(text, scene) == []
    lines = (tmp_path / "captions.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["file"] == "images/000000.png"


def test_user_folder_without_scene_key(tmp_path):
    write_image_folder(tmp_path, sample_scenes(2, "train", 0), size=32)
    lines = [json.loads(x) for x in (tmp_path / "captions.jsonl").read_text().splitlines()]
    user = [json.dumps({"file": d["file"], "caption": "a photo"}) + "\n" for d in lines]
    (tmp_path / "captions.jsonl").write_text("".join(user))
    items, report = read_image_folder(tmp_path)
    assert report["read"] == 2 and [it[2] for it in items] == [None, None]


def _break(folder, kind):
    """Damage entry 1 of a written folder in one way; returns its file name."""
    index = folder / "captions.jsonl"
    records = [json.loads(x) for x in index.read_text().splitlines()]
    file = records[1]["file"]
    if kind == "corrupt":
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: len(data) // 2])
    elif kind == "empty_caption":
        records[1]["caption"] = "  "
    elif kind == "missing_file":
        (folder / file).unlink()
    index.write_text("".join(json.dumps(r) + "\n" for r in records))
    return file


@pytest.mark.parametrize("kind", ["corrupt", "empty_caption", "missing_file"])
def test_bad_entries_are_skipped_and_counted_or_raise_when_strict(tmp_path, kind):
    write_image_folder(tmp_path, sample_scenes(4, "train", 0), size=32)
    file = _break(tmp_path, kind)
    items, report = read_image_folder(tmp_path)
    assert report["read"] == 3 and len(items) == 3
    assert report[f"skipped_{kind}"] == 1
    assert sum(v for k, v in report.items() if k.startswith("skipped")) == 1
    assert [p["file"] for p in report["problems"]] == [file]
    with pytest.raises(ValueError, match=file):
        read_image_folder(tmp_path, strict=True)


def test_all_problems_counted_together(tmp_path):
    write_image_folder(tmp_path, sample_scenes(5, "train", 0), size=32)
    index = tmp_path / "captions.jsonl"
    records = [json.loads(x) for x in index.read_text().splitlines()]
    data = (tmp_path / records[1]["file"]).read_bytes()
    (tmp_path / records[1]["file"]).write_bytes(data[:40])
    records[2]["caption"] = ""
    (tmp_path / records[3]["file"]).unlink()
    index.write_text("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    items, report = read_image_folder(tmp_path)
    assert (report["read"], report["skipped_corrupt"], report["skipped_empty_caption"]) == (2, 1, 1)
    assert (report["skipped_missing_file"], report["skipped_bad_record"]) == (1, 1)
    assert [p["file"] for p in report["problems"]] == [r["file"] for r in records[1:4]] + ["captions.jsonl:6"]
    with pytest.raises(ValueError, match="000001.png"):
        read_image_folder(tmp_path, strict=True)
    with pytest.raises(ValueError, match="captions.jsonl"):
        read_image_folder(tmp_path / "nowhere")


def test_is_caption_tells_captions_from_sentences():
    assert is_caption("an image of a large yellow circle in the bottom right")
    assert is_caption("there is a red square left of a blue cross")
    for sentence in ("And all the people shall say, Amen.", "God is a refuge for us.", "", "a red"):
        assert not is_caption(sentence)
