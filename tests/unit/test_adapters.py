"""Pretrained tokenizer adapters (tokenizers/adapters/) and load_media_tokenizer (tokenizers/media.py).

Every model is a tiny randomly initialised one written with `save_pretrained` into a temporary folder,
so nothing is downloaded: the tests check the adapters' contracts (shapes, ranges, frame arithmetic
against a real encode, save and reopen, errors that name the path), not the models' quality.
"""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch

from trimdm.tokenizers.adapters import load_pretrained, pretrained_tokenizer
from trimdm.tokenizers.audio import AudioCodec, AudioCodecConfig
from trimdm.tokenizers.base import AudioMediaTokenizer, ImageMediaTokenizer, Tokenizer
from trimdm.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from trimdm.tokenizers.media import load_media_tokenizer

SR = 16_000


def at(path) -> str:
    """A pattern matching `path` literally, for the errors that must name it."""
    return re.escape(str(path))


def _save(model, folder):
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.VQModel(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                              up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                              num_vq_embeddings=64, norm_num_groups=4, sample_size=32)
    return _save(model, tmp_path_factory.mktemp("vqmodel"))


def _audio_model(kind: str):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "mimi":  # 16 kHz, 4·4·2 conv strides then one more 2x: 64 samples, 250 frames/s
        return transformers.MimiModel(transformers.MimiConfig(
            sampling_rate=SR, hidden_size=32, num_filters=4, upsampling_ratios=[4, 4, 2], codebook_size=16,
            codebook_dim=8, num_quantizers=10, vector_quantization_hidden_dimension=8, upsample_groups=32,
            num_hidden_layers=1, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
            sliding_window=64, max_position_embeddings=1000))
    if kind == "dac":  # hop 2·4·4 = 32: 500 frames/s
        return transformers.DacModel(transformers.DacConfig(
            encoder_hidden_size=4, downsampling_ratios=[2, 4, 4], decoder_hidden_size=16, n_codebooks=4,
            codebook_size=16, codebook_dim=4, sampling_rate=SR))
    # hop 32, 500 frames/s, 4 bits per code: 2 kbps per codebook, so 2 / 4 / 8 kbps use 1 / 2 / 4 codebooks
    return transformers.EncodecModel(transformers.EncodecConfig(
        sampling_rate=SR, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4, 2], num_lstm_layers=1,
        codebook_size=16, target_bandwidths=[2.0, 4.0, 8.0]))


@pytest.fixture(scope="module")
def audio_dirs(tmp_path_factory):
    return {kind: _save(_audio_model(kind), tmp_path_factory.mktemp(kind)) for kind in ("mimi", "dac", "encodec")}


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(round(SR * seconds)) / SR
    noise = np.random.default_rng(seed).normal(0, 0.05, len(t))
    return (0.4 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


# --- image: VQModel -----------------------------------------------------------------------------


def test_vqmodel_encodes_and_decodes(vq_dir):
    tok = pretrained_tokenizer("image", "vqmodel", vq_dir)
    assert isinstance(tok, Tokenizer) and isinstance(tok, ImageMediaTokenizer)
    assert tok.modality == "image" and tok.image_size == 32  # the config's sample_size
    assert tok.codebook_sizes == (64,) and tok.rate == 64.0  # 32 px / 4 = 8x8 grid
    images = _images(5)
    codes = tok.encode(images)
    assert codes.shape == (5, 64) and codes.dtype == np.int64
    assert 0 <= codes.min() and codes.max() < 64
    np.testing.assert_array_equal(tok.encode(images[2]), codes[2])
    # the codes are the quantiser's nearest codebook entries of the encoder's latents
    with torch.no_grad():
        z = tok.model.encode(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).latents
        z_ND = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        nearest = torch.cdist(z_ND, tok.model.quantize.embedding.weight).argmin(1).reshape(5, -1)
    np.testing.assert_array_equal(codes, nearest.numpy())
    recon = tok.decode(codes)
    assert recon.shape == images.shape and recon.dtype == np.uint8
    assert tok.decode(codes[0]).shape == (32, 32, 3)
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tok.decode(np.full((1, 64), 64))
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        tok.decode(np.zeros((1, 63), np.int64))
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        tok.encode(_images(1, size=16))


def test_vqmodel_resolution_setting(vq_dir):
    tok = pretrained_tokenizer("image", "vqmodel", vq_dir, resolution=16)
    assert tok.image_size == 16 and tok.rate == 16.0
    assert tok.encode(_images(2, size=16)).shape == (2, 16)
    with pytest.raises(ValueError, match="not divisible by the model's downsampling factor 4"):
        pretrained_tokenizer("image", "vqmodel", vq_dir, resolution=30)


def test_vqmodel_saves_and_reopens(vq_dir, tmp_path):
    tok = pretrained_tokenizer("image", "vqmodel", vq_dir, resolution=16)
    tok.save(tmp_path / "saved")
    record = json.loads((tmp_path / "saved" / "trimdm_tokenizer.json").read_text())
    assert record == {"modality": "image", "kind": "vqmodel", "settings": {"resolution": 16}}
    again = load_media_tokenizer(tmp_path / "saved", "image")
    assert type(again) is type(tok) and again.image_size == 16
    images = _images(3, size=16, seed=1)
    np.testing.assert_array_equal(again.encode(images), tok.encode(images))
    np.testing.assert_array_equal(again.decode(tok.encode(images)), tok.decode(tok.encode(images)))
    with pytest.raises(ValueError, match="holds a image tokenizer, not a audio one"):
        load_media_tokenizer(tmp_path / "saved", "audio")


# --- audio: Mimi, DAC, EnCodec --------------------------------------------------------------------


@pytest.mark.parametrize("kind, levels, fps", [("mimi", 8, 250.0), ("dac", 4, 500.0), ("encodec", 4, 500.0)])
def test_audio_codec_encodes_and_decodes(audio_dirs, kind, levels, fps):
    tok = pretrained_tokenizer("audio", kind, audio_dirs[kind])
    assert isinstance(tok, Tokenizer) and isinstance(tok, AudioMediaTokenizer)
    assert tok.modality == "audio" and tok.sample_rate == SR
    assert tok.codebook_sizes == (16,) * levels  # defaults: Mimi 8 of 10, DAC all, EnCodec 8 kbps = 4
    assert tok.frames_per_second == fps and tok.rate == fps * levels
    # frames/s from the config agrees with what the model does with one second of audio
    one = tok.encode(_wave(1.0))
    assert one.shape == (round(fps), levels) == (tok.frames_for(1.0), levels)
    odd = _wave(0.3013, seed=1)  # not a whole number of frames: the last one is zero-padded
    codes = tok.encode(odd)
    assert codes.shape == (tok.frames_for(len(odd) / SR), levels) and codes.dtype == np.int64
    assert 0 <= codes.min() and codes.max() < 16
    assert np.array_equal(tok.encode(odd), codes)
    assert tok.encode(np.zeros(0, np.float32)).shape == (0, levels)
    wave = tok.decode(codes)
    hop = round(SR / fps)
    assert wave.dtype == np.float32 and wave.shape == (len(codes) * hop,) and np.isfinite(wave).all()
    assert tok.decode(np.zeros((0, levels), np.int64)).shape == (0,)
    with pytest.raises(ValueError, match=rf"shape \(frames, {levels}\)"):
        tok.decode(codes[:, :1])
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        tok.decode(np.full((2, levels), 16))
    with pytest.raises(ValueError, match="1-D"):
        tok.encode(np.stack([odd, odd]))


@pytest.mark.parametrize("kind", ["mimi", "dac", "encodec"])
def test_audio_codec_saves_and_reopens(audio_dirs, kind, tmp_path):
    tok = pretrained_tokenizer("audio", kind, audio_dirs[kind], levels=2)
    assert tok.codebook_sizes == (16, 16)
    tok.save(tmp_path / "saved")
    record = json.loads((tmp_path / "saved" / "trimdm_tokenizer.json").read_text())
    assert record == {"modality": "audio", "kind": kind, "settings": {"levels": 2}}
    again = load_media_tokenizer(tmp_path / "saved", "audio")
    assert type(again) is type(tok) and again.codebook_sizes == (16, 16)
    w = _wave(0.5, seed=2)
    np.testing.assert_array_equal(again.encode(w), tok.encode(w))
    np.testing.assert_array_equal(again.decode(tok.encode(w)), tok.decode(tok.encode(w)))


@pytest.mark.parametrize("kind", ["mimi", "dac"])
def test_fewer_levels_are_the_first_columns(audio_dirs, kind):
    """Residual quantisation: the K-level code is the first K columns of a deeper one."""
    w = _wave(0.4, seed=3)
    deep = pretrained_tokenizer("audio", kind, audio_dirs[kind], levels=4).encode(w)
    np.testing.assert_array_equal(pretrained_tokenizer("audio", kind, audio_dirs[kind], levels=2).encode(w),
                                  deep[:, :2])


def test_levels_are_checked(audio_dirs):
    # EnCodec: the largest target bandwidth with at most `levels` codebooks (2 / 4 / 8 kbps: 1 / 2 / 4)
    encodec = pretrained_tokenizer("audio", "encodec", audio_dirs["encodec"], levels=3)
    assert (encodec.levels, encodec.bandwidth) == (2, 4.0)
    assert pretrained_tokenizer("audio", "encodec", audio_dirs["encodec"], levels=1).bandwidth == 2.0
    assert pretrained_tokenizer("audio", "mimi", audio_dirs["mimi"], levels=10).codebook_sizes == (16,) * 10
    with pytest.raises(ValueError, match=r"levels must lie in \[1, 10\]"):
        pretrained_tokenizer("audio", "mimi", audio_dirs["mimi"], levels=11)
    with pytest.raises(ValueError, match=r"levels must lie in \[1, 4\]"):
        pretrained_tokenizer("audio", "dac", audio_dirs["dac"], levels=5)
    with pytest.raises(ValueError, match="positive int"):
        pretrained_tokenizer("audio", "dac", audio_dirs["dac"], levels=0)


def test_encodec_with_loudness_normalisation_is_refused(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.EncodecConfig(sampling_rate=SR, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4, 2],
                                     num_lstm_layers=1, codebook_size=16, target_bandwidths=[2.0], normalize=True)
    _save(transformers.EncodecModel(cfg), tmp_path)
    with pytest.raises(ValueError, match=f"{at(tmp_path)}.*normalize=True"):
        pretrained_tokenizer("audio", "encodec", tmp_path)


# --- errors ----------------------------------------------------------------------------------------


def test_errors_name_the_path(vq_dir, audio_dirs, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"{at(missing)}: no such folder"):
        pretrained_tokenizer("audio", "mimi", missing)
    with pytest.raises(ValueError, match=f"{at(missing)}: no such folder"):
        pretrained_tokenizer("image", "vqmodel", missing)
    with pytest.raises(ValueError, match=f"{at(tmp_path)}: no config.json"):
        pretrained_tokenizer("audio", "dac", tmp_path)
    with pytest.raises(ValueError, match=f"{at(vq_dir)}: unknown image tokenizer kind 'vqgan'"):
        pretrained_tokenizer("image", "vqgan", vq_dir)
    with pytest.raises(ValueError, match=f"{at(vq_dir)}: unknown settings \\['levels'\\]"):
        pretrained_tokenizer("image", "vqmodel", vq_dir, levels=2)
    with pytest.raises(ValueError, match=f"{at(vq_dir)}: no pretrained tokenizers for modality 'text'"):
        pretrained_tokenizer("text", "vqmodel", vq_dir)
    # a folder of another model class
    with pytest.raises(ValueError, match=f"{at(audio_dirs['dac'])}/config.json: holds 'dac', not .*'mimi'"):
        pretrained_tokenizer("audio", "mimi", audio_dirs["dac"])
    with pytest.raises(ValueError, match=f"{at(vq_dir)}/config.json: holds 'VQModel'"):
        pretrained_tokenizer("audio", "encodec", vq_dir)
    with pytest.raises(ValueError, match=f"{at(audio_dirs['mimi'])}/config.json: holds 'mimi', not .*'VQModel'"):
        pretrained_tokenizer("image", "vqmodel", audio_dirs["mimi"])


def test_folder_without_weights_names_the_path(audio_dirs, tmp_path):
    (tmp_path / "config.json").write_text((audio_dirs["dac"] / "config.json").read_text())
    with pytest.raises(ValueError, match=f"{at(tmp_path)}: cannot load the dac model"):
        pretrained_tokenizer("audio", "dac", tmp_path)


def test_missing_dependency_names_the_extra(audio_dirs, vq_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ValueError, match=r"'transformers' package .*pip install 'trimdm\[hf\]'"):
        pretrained_tokenizer("audio", "dac", audio_dirs["dac"])
    with pytest.raises(ValueError, match=r"'diffusers' package .*pip install 'trimdm\[hf\]'"):
        pretrained_tokenizer("image", "vqmodel", vq_dir)


def test_malformed_settings_file(vq_dir, tmp_path):
    tok = pretrained_tokenizer("image", "vqmodel", vq_dir)
    tok.save(tmp_path)
    (tmp_path / "trimdm_tokenizer.json").write_text(json.dumps({"kind": "vqmodel", "resolution": 32}))
    with pytest.raises(ValueError, match="trimdm_tokenizer.json: expected a JSON object"):
        load_media_tokenizer(tmp_path, "image")
    with pytest.raises(ValueError, match="trimdm_tokenizer.json: missing"):
        load_pretrained(tmp_path / "nowhere")


# --- native tokenizers through load_media_tokenizer --------------------------------------------------


def test_native_tokenizers_round_trip(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        image = ImageTokenizer(ImageTokenizerConfig(channels=(8, 16), res_blocks=(0, 0), image_size=16))
        audio = AudioCodec(AudioCodecConfig(channels=32, blocks=2, latent_dim=16, gl_iters=4))
    assert isinstance(image, ImageMediaTokenizer) and isinstance(audio, AudioMediaTokenizer)
    assert image.image_size == 16 and audio.sample_rate == SR and audio.frames_per_second == 25.0
    image.save(tmp_path / "image")
    audio.save(tmp_path / "audio")
    image2 = load_media_tokenizer(tmp_path / "image", "image")
    audio2 = load_media_tokenizer(tmp_path / "audio", "audio")
    assert type(image2) is ImageTokenizer and type(audio2) is AudioCodec
    images = _images(3, size=16)
    np.testing.assert_array_equal(image2.encode(images), image.encode(images))
    w = _wave(0.5)
    np.testing.assert_array_equal(audio2.encode(w), audio.encode(w))
    with pytest.raises(ValueError, match="image tokenizer config"):
        load_media_tokenizer(tmp_path / "audio", "image")
    with pytest.raises(ValueError, match="modality must be one of"):
        load_media_tokenizer(tmp_path / "image", "text")
    with pytest.raises(ValueError, match="config.json"):
        load_media_tokenizer(tmp_path / "nowhere", "audio")
