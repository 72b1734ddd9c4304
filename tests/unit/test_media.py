"""data/media.py: images from any mode and size fitted to the tokenizer's square, audio from bytes made
mono at the codec's rate, and the errors of truncated files (the same message on every run)."""
import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from trimdm.data.media import fit_image, read_audio, read_image
from trimdm.data.records import normalise_text, split_of


def encoded(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_every_mode_becomes_rgb_and_transparency_is_white():
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 0))  # fully transparent red
    assert (read_image(encoded(rgba)) == 255).all()
    la = Image.new("LA", (4, 3), (0, 128))  # half-transparent black on white
    assert abs(int(read_image(encoded(la))[0, 0, 0]) - 127) <= 1
    cmyk = Image.new("CMYK", (5, 2), (0, 255, 255, 0))  # red in CMYK
    px = read_image(encoded(cmyk, "JPEG"))[0, 0]
    assert px[0] > 200 and px[1] < 60 and px[2] < 60
    for mode in ("L", "P", "RGB", "I;16"):
        image = read_image(encoded(Image.new(mode, (6, 5))))
        assert image.shape == (5, 6, 3) and image.dtype == np.uint8, mode


def test_fit_crops_the_centre_or_pads_with_white():
    image = np.zeros((512, 640, 3), np.uint8)
    image[:, 64:576] = 200  # the centre square is grey, the side bands black
    crop = fit_image(image, 32, "crop")
    assert crop.shape == (32, 32, 3) and abs(int(crop.mean()) - 200) <= 2
    pad = fit_image(image, 32, "pad")
    assert pad.shape == (32, 32, 3)
    assert (pad[0] == 255).all() and (pad[-1] == 255).all()  # 640×512 -> 32×26 with white bands above and below
    assert (pad[16, 0] == 0).all()
    same = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert fit_image(same, 32) is same  # already the right size: untouched, no resampling
    with pytest.raises(ValueError, match="fit mode"):
        fit_image(same, 16, "stretch")


def test_audio_from_bytes_is_mono_at_the_requested_rate_and_truncation_is_an_error():
    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, stereo, 22050, format="FLAC")
    wave = read_audio(buf.getvalue(), 16_000, name="clip.flac")
    assert wave.shape == (16_000,) and wave.dtype == np.float32
    assert abs(np.abs(wave).max() - 0.5) < 0.02  # the mean of the two channels
    messages = set()
    for _ in range(2):
        with pytest.raises(ValueError, match="clip.flac") as e:
            read_audio(buf.getvalue()[: len(buf.getvalue()) // 2], 16_000, name="clip.flac")
        messages.add(str(e.value))
    garbage = b"\x89PNG not really"
    for _ in range(2):
        with pytest.raises(ValueError, match="pic.png") as e:
            read_image(garbage, name="pic.png")
        messages.add(str(e.value))
    assert len(messages) == 2 and not any("0x" in m for m in messages)


def test_split_by_key_hash_and_text_normalisation():
    keys = [f"shard-000.tar/{i:06d}" for i in range(4000)]
    val = [k for k in keys if split_of(k, 0, 0.1) == "val"]
    # binomial(4000, 0.1): mean 400, SE 19; 4 SE either side
    assert abs(len(val) - 400) < 4 * np.sqrt(4000 * 0.1 * 0.9)
    assert val == [k for k in keys if split_of(k, 0, 0.1) == "val"]  # deterministic
    assert val != [k for k in keys if split_of(k, 1, 0.1) == "val"]  # the seed picks another split
    assert normalise_text("  A  Cat\n sat ", False, "strip") == "A  Cat\n sat"
    assert normalise_text("  A  Cat\n sat ", True, "collapse") == "a cat sat"
