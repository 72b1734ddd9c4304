"""Image judge: tinyworld's offline stand-in for CLIP (method §9, T2I attribute accuracy and I2T caption
accuracy, FID-style distances).

Owns: a small CNN that reads a tinyworld image back into its scene (for each of the 3x3 grid cells:
empty, or the shape, colour and size of the object there; plus the background), its config, training
on (image, scene) pairs, `attribute_accuracy` against true scenes, `judge_caption` (does a caption
describe what the judge sees), `features` for Fréchet distances, and save/load (safetensors + JSON).

Does not own: the scene vocabulary, captions or their parser (data/tinyworld/scenes.py), the Fréchet
distance itself, or the generation it judges (sample/).

Architecture: 3x3 convolutions (BatchNorm, ReLU), one at 32x32 and three at 16x16 (the first with
stride 2); the map is pooled over each grid cell (average and max over its adaptive 3x3 bin) and one
head shared by the nine cells (an MLP on the pooled features plus a learned cell embedding) predicts
occupancy, shape and size. Colour comes from a separate per-pixel branch (two 1x1 convolutions, max
over the cell) and the background from its global average.

Held-out compositions: val/test hold (colour, shape) pairs that never occur in training
(scenes.HELDOUT_PAIRS), and the judge must read them too. Heads are factorised (never a joint
colour-shape class, which could not predict an unseen pair), and each is kept from learning the other's
attribute: shape is trained on images whose RGB channels are permuted in half of each batch (colour
targets dropped there), colour sees single pixels only. Measured on the demo data (10k train scenes,
500 val scenes of which 125 hold a held-out pair, 550 steps): one shared head read 66% of held-out
scenes exactly (92% overall); with channel permutation 100%. Without BatchNorm the colour branch
learned slowly (74% colour accuracy after 100 steps on the miniature test data, 100% with it).

Tokenizer reconstructions: generated images are decoded by the image tokenizer, which blurs small
shapes; training also on reconstructions of half the train set (`reconstruct`) teaches the judge to
read them: on reconstructed val scenes shape accuracy 61% -> 89% (clean val stays at 100%).

Object order: a Scene lists objects in the order its caption mentions them; an image does not show that
order, so `predict` lists objects in raster order (row, then column), and `judge_caption` accepts a
caption when some order of the predicted objects matches it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trimdm.data.tinyworld.judges.training import fit_judge
from trimdm.data.tinyworld.scenes import (BACKGROUNDS, COLORS, SHAPES, SIZES, Obj, Scene, caption_errors,
                                          has_heldout_pair)
from trimdm.fileio import CONFIG, load_state, read_module, save_module

FORMAT = "trimdm.image_judge"
CELLS = 9  # the 3x3 grid of scenes.LOCATIONS
_COLORS, _BACKGROUNDS = tuple(COLORS), tuple(BACKGROUNDS)
_CHUNK = 512  # images per forward pass at inference; bounds memory


@dataclasses.dataclass(frozen=True)
class ImageJudgeConfig:
    """Architecture (saved with the weights)."""

    image_size: int = 32
    channels: tuple[int, int] = (32, 64)  # widths at full and half resolution
    hidden: int = 128  # per-cell head width
    pixel_channels: int = 32  # width of the per-pixel colour branch

    def __post_init__(self) -> None:
        if isinstance(self.channels, list):  # JSON gives lists
            object.__setattr__(self, "channels", tuple(self.channels))
        if not isinstance(self.image_size, int) or self.image_size < 12 or self.image_size % 2:
            raise ValueError(f"image_size must be an even int >= 12, got {self.image_size!r}")
        if len(self.channels) != 2 or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"channels must be two positive ints, got {self.channels!r}")
        for name in ("hidden", "pixel_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

    @property
    def feature_dim(self) -> int:
        return 2 * self.channels[1]


@dataclasses.dataclass(frozen=True)
class ImageJudgeTraining:
    """Training settings. Steps scale with the data: `epochs` passes over the training set, at least
    `min_steps` (so a miniature data set still learns something) and at most `max_steps`."""

    batch: int = 64
    epochs: float = 3.0
    min_steps: int = 100
    max_steps: int = 2000
    lr: float = 3e-3
    weight_decay: float = 1e-4
    permute_fraction: float = 0.5  # share of each batch with permuted RGB channels (see the docstring)
    recon_fraction: float = 0.5  # share of the train set added again as tokenizer reconstructions
    seed: int = 0

    def batch_for(self, n: int) -> int:
        """`batch`, or smaller on a set too small for 16 batches per epoch (the miniature test data)."""
        return max(1, min(self.batch, math.ceil(n / 16)))

    def steps_for(self, n: int) -> int:
        return int(min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * n / self.batch_for(n)))))


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ImageJudgeNet(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> per-cell logits (B, 9, ·) and background logits (B, 4)."""

    def __init__(self, cfg: ImageJudgeConfig):
        super().__init__()
        c0, c1 = cfg.channels
        cp = cfg.pixel_channels
        self.body = nn.Sequential(_conv(3, c0), _conv(c0, c1, 2), _conv(c1, c1), _conv(c1, c1))
        self.cell_embed = nn.Parameter(torch.zeros(CELLS, 2 * c1))
        self.cell_head = nn.Sequential(nn.Linear(2 * c1, cfg.hidden), nn.ReLU(),
                                       nn.Linear(cfg.hidden, 2 + len(SHAPES) + len(SIZES)))
        # colour sees single pixels only (1x1 convolutions, max over the cell), so it cannot learn
        # which shapes a colour came with in training
        self.pixel = nn.Sequential(nn.Conv2d(3, cp, 1, bias=False), nn.BatchNorm2d(cp), nn.ReLU(),
                                   nn.Conv2d(cp, cp, 1, bias=False), nn.BatchNorm2d(cp), nn.ReLU())
        self.color_head = nn.Linear(cp, len(COLORS))
        self.background_head = nn.Linear(cp, len(BACKGROUNDS))

    def trunk(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (per-cell features (B, 9, 2C), global features (B, 2C)) of the convolutional body."""
        h_BChw = self.body(x_B3HW)
        # adaptive bins of a 16x16 map into 3 overlap by one pixel and cover each grid cell
        cell_BC33 = torch.cat([F.adaptive_avg_pool2d(h_BChw, 3), F.adaptive_max_pool2d(h_BChw, 3)], dim=1)
        glob_BC = torch.cat([h_BChw.mean(dim=(2, 3)), h_BChw.amax(dim=(2, 3))], dim=1)
        return cell_BC33.flatten(2).transpose(1, 2), glob_BC

    def forward(self, x_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        cell_B9C, _ = self.trunk(x_B3HW)
        occ, shape, size = torch.split(self.cell_head(cell_B9C + self.cell_embed), (2, len(SHAPES), len(SIZES)), -1)
        p_BCHW = self.pixel(x_B3HW)
        color = self.color_head(F.adaptive_max_pool2d(p_BCHW, 3).flatten(2).transpose(1, 2))
        return {"occupied": occ, "shape": shape, "color": color, "size": size,
                "background": self.background_head(p_BCHW.mean(dim=(2, 3)))}


def _check_images(images: np.ndarray, size: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
    return images


def _to_input(images_NHW3: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_NHW3)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def scene_targets(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Per-cell targets (N, 9): occupied 0/1, shape/colour/size index or -1 for an empty cell; and the
    background index (N,)."""
    n = len(scenes)
    out = {k: torch.full((n, CELLS), -1, dtype=torch.long) for k in ("shape", "color", "size")}
    out["occupied"] = torch.zeros((n, CELLS), dtype=torch.long)
    out["background"] = torch.empty(n, dtype=torch.long)
    for i, s in enumerate(scenes):
        out["background"][i] = _BACKGROUNDS.index(s.background)
        for o in s.objects:
            c = 3 * o.row + o.col
            out["occupied"][i, c] = 1
            out["shape"][i, c] = SHAPES.index(o.shape)
            out["color"][i, c] = _COLORS.index(o.color)
            out["size"][i, c] = SIZES.index(o.size)
    return out


class ImageJudge:
    """Reads tinyworld images (uint8 (N, H, W, 3)) back into scenes; see the module docstring."""

    def __init__(self, cfg: ImageJudgeConfig, net: ImageJudgeNet | None = None):
        self.cfg = cfg
        self.net = (net if net is not None else ImageJudgeNet(cfg)).eval()

    def _forward(self, images: np.ndarray, fn: Callable) -> list:
        images = _check_images(images, self.cfg.image_size)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), _CHUNK):
                out.append(fn(_to_input(images[i:i + _CHUNK])))
        return out

    def decisions(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Argmax per head: occupied/shape/color/size (N, 9) and background (N,), as vocabulary indices."""
        parts = self._forward(images, lambda x: {k: v.argmax(-1) for k, v in self.net(x).items()})
        if not parts:
            return {k: np.zeros((0, CELLS), np.int64) for k in ("occupied", "shape", "color", "size")} | {
                "background": np.zeros(0, np.int64)}
        return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}

    def predict(self, images: np.ndarray) -> list[Scene | None]:
        """The scene each image shows, objects in raster order, seed 0; None where the judge sees no
        object or more than two (not a tinyworld scene, which holds one or two)."""
        d = self.decisions(images)
        scenes: list[Scene | None] = []
        for i in range(len(d["background"])):
            objects = tuple(Obj(shape=SHAPES[d["shape"][i, c]], color=_COLORS[d["color"][i, c]],
                                size=SIZES[d["size"][i, c]], row=c // 3, col=c % 3)
                            for c in range(CELLS) if d["occupied"][i, c])
            ok = 1 <= len(objects) <= 2
            scenes.append(Scene(objects, _BACKGROUNDS[d["background"][i]], 0) if ok else None)
        return scenes

    def features(self, images: np.ndarray) -> torch.Tensor:
        """(N, 2·channels[1]) float32: average- and max-pooled last feature map, for Fréchet distances."""
        parts = self._forward(images, lambda x: self.net.trunk(x)[1])
        return torch.cat(parts) if parts else torch.zeros(0, self.cfg.feature_dim)

    def save(self, directory: str | Path) -> None:
        save_module(directory, self.net.state_dict(), {"format": FORMAT, "config": dataclasses.asdict(self.cfg)})

    @classmethod
    def load(cls, directory: str | Path) -> ImageJudge:
        _, cfg, net = load_judge(directory, FORMAT, ImageJudgeConfig, ImageJudgeNet)
        return cls(cfg, net)


def load_judge(directory: str | Path, fmt: str, config_cls, net_cls) -> tuple[dict, object, nn.Module]:
    """(saved config JSON, config, network with its weights) of a judge saved with `save_module`; a
    ValueError naming the file when it is unusable."""
    meta, state = read_module(directory, "judge")
    if meta.get("format") != fmt or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{Path(directory) / CONFIG}: not a {fmt} config")
    try:
        cfg = config_cls(**meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{directory}: invalid {fmt} config ({e})") from None
    net = net_cls(cfg)
    load_state(net, state, directory)
    return meta, cfg, net


# ---------------------------------------------------------------------------------------------------
# training


def _ce(logits_NK: torch.Tensor, target_N: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets >= 0; zero (not NaN) when a batch has none."""
    keep = target_N >= 0
    return F.cross_entropy(logits_NK[keep].float(), target_N[keep]) if keep.any() else logits_NK.sum() * 0.0


def _loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    # attribute losses only on occupied cells (targets -1 elsewhere), colour and background not on
    # channel-permuted images
    loss = sum(_ce(out[k].flatten(0, 1), tgt[k].flatten()) for k in ("occupied", "shape", "color", "size"))
    return loss + _ce(out["background"], tgt["background"])


def _permute_channels(x_B3HW: torch.Tensor, tgt: dict[str, torch.Tensor], fraction: float,
                      gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Swap the RGB channels of a `fraction` of the batch (one of the 5 non-identity permutations) and
    drop their colour and background targets: shape, size and occupancy must then be read without
    colour, which keeps the shape head right on the held-out (colour, shape) pairs."""
    perms = torch.tensor(list(itertools.permutations(range(3)))[1:])
    chosen = torch.rand(len(x_B3HW), generator=gen) < fraction
    which = perms[torch.randint(len(perms), (len(x_B3HW),), generator=gen)]
    idx_B3 = torch.where(chosen[:, None], which, torch.arange(3))
    x_B3HW = torch.gather(x_B3HW, 1, idx_B3[:, :, None, None].expand_as(x_B3HW))
    tgt = dict(tgt)
    tgt["color"] = torch.where(chosen[:, None], -1, tgt["color"])
    tgt["background"] = torch.where(chosen, -1, tgt["background"])
    return x_B3HW, tgt


def train_image_judge(
    images: np.ndarray,
    scenes: Sequence[Scene],
    cfg: ImageJudgeConfig = ImageJudgeConfig(),
    training: ImageJudgeTraining = ImageJudgeTraining(),
    log: Callable[[str], None] | None = None,
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None,
    bf16: bool = False,
) -> tuple[ImageJudge, dict[str, Any]]:
    """Train on uint8 (N, H, W, 3) images and their true scenes; returns the judge and a report.

    `reconstruct` (the data set's tokenizer, decode∘encode) adds reconstructions of the first
    `recon_fraction` of the images as extra examples with the same scenes. Deterministic at a fixed
    thread count: initialisation from torch's generator seeded inside fork_rng (the caller's state is
    untouched), batches and channel permutations from their own generator. AdamW, 5% linear warm-up,
    cosine decay to 1% of `lr`, gradient clip 1; `bf16`: forward passes under bf16 autocast.
    """
    images = _check_images(images, cfg.image_size)
    if len(images) != len(scenes) or len(images) == 0:
        raise ValueError(f"need as many scenes as images (> 0), got {len(images)} images, {len(scenes)} scenes")
    if any(not isinstance(s, Scene) for s in scenes):
        raise ValueError("scenes must be tinyworld Scene objects (a user folder without scenes cannot train a judge)")
    t = training
    steps, batch = t.steps_for(len(images)), t.batch_for(len(images))
    say = log or (lambda _m: None)
    tgt_all = scene_targets(scenes)
    t0, c0 = time.perf_counter(), time.process_time()
    n_recon = 0
    if reconstruct is not None and t.recon_fraction > 0:
        # tokenizer reconstructions of the first part of the train set join it as extra examples
        n_recon = int(round(t.recon_fraction * len(images)))
        images = np.concatenate([images, reconstruct(images[:n_recon])])
        tgt_all = {k: torch.cat([v, v[:n_recon]]) for k, v in tgt_all.items()}
    data = torch.from_numpy(np.ascontiguousarray(images))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        net = ImageJudgeNet(cfg)
        gen = torch.Generator().manual_seed(t.seed)

        def loss_at(step):
            idx = torch.randint(len(data), (batch,), generator=gen)
            x, tgt = _permute_channels(_to_input(data[idx].numpy()), {k: v[idx] for k, v in tgt_all.items()},
                                       t.permute_fraction, gen)
            return _loss(net(x), tgt)

        losses = fit_judge(net, t, steps, loss_at, say, "image judge", t0, bf16=bf16)
    judge = ImageJudge(cfg, net)
    report = {"steps": steps, "batch": batch, "train_images": len(images) - n_recon,
              "reconstructions": n_recon, "threads": torch.get_num_threads(),
              "train_seconds": round(time.perf_counter() - t0, 1),
              "cpu_seconds": round(time.process_time() - c0, 1), "loss_first": float(np.mean(losses[:10])),
              "loss_last": float(np.mean(losses[-min(50, steps):])),
              "params": sum(p.numel() for p in net.parameters()),
              "config": dataclasses.asdict(cfg), "training": dataclasses.asdict(t)}
    return judge, report


# ---------------------------------------------------------------------------------------------------
# metrics


def attribute_accuracy(judge: ImageJudge, images: np.ndarray, scenes: Sequence[Scene]) -> dict[str, float]:
    """How well the judge reads images whose true scenes are known.

    Per true object: shape, color, size (read at the object's cell) and location (its cell is seen as
    occupied); per cell: occupancy (catches extra objects too); per scene: background. "attributes" is
    the mean over all these per-object and per-scene decisions (shape, color, size, location, background);
    "all_correct" the fraction of scenes read exactly (every cell and the background right), also over
    the scenes holding a held-out (colour, shape) pair ("all_correct_heldout", when there are any).
    """
    if len(images) != len(scenes) or len(scenes) == 0:
        raise ValueError(f"need as many scenes as images (> 0), got {len(images)} images, {len(scenes)} scenes")
    d = judge.decisions(images)
    tgt = {k: v.numpy() for k, v in scene_targets(scenes).items()}
    occupied = tgt["occupied"] == 1
    n_obj = int(occupied.sum())
    right = {k: (d[k] == tgt[k]) & occupied for k in ("shape", "color", "size")}
    right["location"] = (d["occupied"] == 1) & occupied
    background = d["background"] == tgt["background"]
    out = {k: float(v.sum() / n_obj) for k, v in right.items()}
    out["occupancy"] = float((d["occupied"] == tgt["occupied"]).mean())
    out["background"] = float(background.mean())
    out["attributes"] = float((sum(int(v.sum()) for v in right.values()) + int(background.sum()))
                              / (4 * n_obj + len(scenes)))
    cells_ok = (d["occupied"] == tgt["occupied"]) & np.where(occupied, right["shape"] & right["color"]
                                                             & right["size"], True)
    exact = cells_ok.all(axis=1) & background
    out["all_correct"] = float(exact.mean())
    heldout = np.array([has_heldout_pair(s) for s in scenes])
    if heldout.any():
        out["all_correct_heldout"] = float(exact[heldout].mean())
    out["n_scenes"] = len(scenes)
    return out


def judge_caption(text: str, scene: Scene | None) -> list[str]:
    """Errors of `text` as a description of a scene the judge read ([] when it describes it right).

    Object order is not visible in an image, so the caption is accepted when some order of the scene's
    objects makes scenes.caption_errors empty; otherwise the errors of the order with the fewest.
    """
    if scene is None:
        return ["the judge sees no tinyworld scene (no object or more than two)"]
    best = None
    for order in itertools.permutations(scene.objects):
        errors = caption_errors(text, dataclasses.replace(scene, objects=tuple(order)))
        if not errors:
            return []
        if best is None or len(errors) < len(best):
            best = errors
    return best
