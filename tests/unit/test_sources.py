"""Source readers (data/sources): records per format, stable keys, every reject reason, and the checks
open_sources makes before any work, on small corpora written by tests/corpora.py."""
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import corpora
from trimdm.data.sources import Record, SourceOptions, open_sources
from trimdm.data.sources.base import clean_text, sniff_ext


def records(kind, specs, **options):
    """{format: [Record]} of the sources of `specs`."""
    out = {}
    for source in open_sources(kind, [str(s) for s in specs], SourceOptions(**options)):
        out.setdefault(source.format, []).extend(source.records())
    return out


def all_records(kind, specs, **options):
    return [r for rs in records(kind, specs, **options).values() for r in rs]


def reasons(recs):
    return Counter(r.error.split(":")[0] for r in recs if r.error)


def by_key(recs):
    keys = [r.key for r in recs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
    return {r.key: r for r in recs}


# ---------------------------------------------------------------------------------------------
# text


def test_a_text_folder_yields_every_format_with_positional_keys(tmp_path):
    corpora.write_text_files(tmp_path)
    got = records("text", [tmp_path])
    assert list(got) == ["txt", "jsonl", "json", "parquet"]
    assert [r.key for r in got["txt"]] == ["notes/a.txt", "notes/b.txt"]
    assert got["txt"][0].text.startswith("First paragraph here.\n\nSecond paragraph,\nover two lines.")
    assert [(r.key, r.text, r.error) for r in got["jsonl"]] == [
        ("docs.jsonl:1", corpora.document(0), None), ("docs.jsonl:2", corpora.document(1), None),
        ("docs.jsonl:3", corpora.document(2), None), ("docs.jsonl:4", corpora.document(3), None),
        ("docs.jsonl:5", None, "non-UTF-8 text"), ("docs.jsonl:6", None, "empty document")]
    assert [(r.key, r.text) for r in got["json"]] == [(f"docs.json:{i}", corpora.document(10 + i)) for i in range(3)]
    assert [r.key for r in got["parquet"]] == [f"docs.parquet:{i}" for i in range(5)]
    assert [r.error for r in got["parquet"]] == [None, None, None, "missing document", None]
    assert got["parquet"][4].text == corpora.document(24)


def test_paragraphs_split_txt_on_blank_lines_keyed_by_first_line(tmp_path):
    paths = corpora.write_text_files(tmp_path)
    got = all_records("text", [paths["txt"], paths["txt2"]], paragraphs=True)
    assert [(r.key, r.text) for r in got] == [
        ("a.txt:1", "First paragraph here."), ("a.txt:3", "Second paragraph,\nover two lines."),
        ("a.txt:7", "Third one."), ("b.txt:1", "Only one paragraph in this file.")]


def test_text_is_not_normalised_only_stripped(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "  Ünïcode  TEXT\twith  Spaces \n"}) + "\n")
    assert all_records("text", [tmp_path / "d.jsonl"])[0].text == "Ünïcode  TEXT\twith  Spaces"


def test_text_field_override_and_a_missing_field_named_up_front(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"body": f"doc {i}", "n": i}) + "\n" for i in range(3)))
    assert [r.text for r in all_records("text", [path], text_field="body")] == ["doc 0", "doc 1", "doc 2"]
    with pytest.raises(ValueError, match=rf"{path}: no text field 'text' \(it has body, n\).*--text-field"):
        open_sources("text", [str(path)])
    corpora.write_text_files(tmp_path / "more")
    with pytest.raises(ValueError, match=r"docs.parquet: no text field 'content'"):
        open_sources("text", [str(tmp_path / "more" / "docs.parquet")], SourceOptions(text_field="content"))


def test_a_json_that_is_not_an_array_is_refused_alone_and_passed_over_in_a_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"lr": 1}')
    (tmp_path / "d.txt").write_text("a document")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: a .json text source must hold one JSON array"):
        open_sources("text", [str(tmp_path / "config.json")])
    assert [r.key for r in all_records("text", [tmp_path])] == ["d.txt"]


def test_hf_datasets_folders_with_and_without_splits(tmp_path):
    one = corpora.write_hf_text_dataset(tmp_path / "one", n=3)
    got = records("text", [one])
    assert [(r.key, r.text) for r in got["hf-dataset"]] == [(str(i), corpora.document(i)) for i in range(3)]
    both = corpora.write_hf_text_dataset(tmp_path / "both", splits=True, n=2)
    assert [r.key for r in all_records("text", [both])] == ["train:0", "train:1", "validation:0", "validation:1"]
    # inside a folder given as the source: its files are not read as text files, its keys get its path
    (tmp_path / "extra.txt").write_text("one more document")
    keys = [r.key for r in all_records("text", [tmp_path])]
    assert keys == ["extra.txt", "both/train:0", "both/train:1", "both/validation:0", "both/validation:1",
                    "one/0", "one/1", "one/2"]
    with pytest.raises(ValueError, match=rf"{one}: split \(the dataset\) has no text column 'body'"):
        open_sources("text", [str(one)], SourceOptions(text_field="body"))


def test_a_missing_datasets_package_names_the_extra(tmp_path, monkeypatch):
    folder = corpora.write_hf_text_dataset(tmp_path / "hf")
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(ValueError, match=r"optional extra 'hf' \(pip install 'trimdm\[hf\]'\)"):
        open_sources("text", [str(folder)])


# ---------------------------------------------------------------------------------------------
# image-text


def test_image_tars_counts_keys_and_raw_bytes(tmp_path):
    shards = corpora.write_image_tars(tmp_path, n_per_shard=3, shards=2)
    got = records("image_text", [tmp_path])
    recs = got["webdataset"]
    assert list(got) == ["webdataset"] and [r.key for r in recs] == [
        f"shard-00{i // 3}.tar/{i:06d}" for i in range(6)]
    assert [r.text for r in recs] == [corpora.caption(i) for i in range(6)] and not reasons(recs)
    assert [r.media_ext for r in recs] == ["png", "jpg", "webp", "png", "png", "jpg"]
    assert recs[1].media == corpora.image_bytes(1, "JPEG", "L")  # as written, not decoded
    assert all(r.media_path is None for r in recs)
    assert [r.key for r in all_records("image_text", [shards[1]])] == ["shard-001.tar/000003",
                                                                       "shard-001.tar/000004", "shard-001.tar/000005"]


def test_image_tar_json_captions_and_caption_field_override(tmp_path):
    corpora.write_image_tars(tmp_path / "a", 2, 1, json_captions=True)
    assert [r.text for r in all_records("image_text", [tmp_path / "a"])] == [corpora.caption(0), corpora.caption(1)]
    from webdataset import TarWriter

    with TarWriter(str(tmp_path / "alt.tar")) as w:
        w.write({"__key__": "x", "png": corpora.image_bytes(0), "json": json.dumps({"alt": "an alt text"}).encode()})
        w.write({"__key__": "y", "png": corpora.image_bytes(1), "json": b"{not json"})
    got = all_records("image_text", [tmp_path / "alt.tar"], caption_field="alt")
    assert [(r.text, r.error) for r in got] == [("an alt text", None), (None, "invalid JSON: Expecting property name "
                                                                       "enclosed in double quotes")]


def test_a_damaged_image_tar_gives_each_reason_and_keeps_the_rest(tmp_path):
    corpora.write_image_tars(tmp_path, 3, 2, corrupt=True)
    recs = all_records("image_text", [tmp_path])
    assert reasons(recs) == {"empty caption": 1, "non-UTF-8 text": 1, "corrupt tar": 1}
    assert [r.key for r in recs if r.error is None] == [f"shard-00{min(i // 3, 1)}.tar/{i:06d}" for i in range(7)]
    garbage = by_key(recs)["shard-001.tar/000006"]  # garbage bytes are the pipeline's to find
    assert garbage.error is None and garbage.media.startswith(b"this is not an image")
    bad = [r for r in recs if r.error and r.error.startswith("corrupt tar")]
    assert [r.key for r in bad] == ["shard-001.tar/?1"] and "unexpected end of data" in bad[0].error
    assert "shard-001.tar/000009" not in by_key(recs)


def test_a_garbled_member_header_is_reported_not_taken_for_the_end(tmp_path):
    (path,) = corpora.write_image_tars(tmp_path, 4, 1)
    with tarfile.open(path) as tar:
        third = [m for m in tar.getmembers()][4].offset
    data = path.read_bytes()
    path.write_bytes(data[:third] + b"\x17" * 512 + data[third:])
    recs = all_records("image_text", [path])
    assert [r.key for r in recs] == ["shard-000.tar/000000", "shard-000.tar/000001", "shard-000.tar/?1"]
    assert recs[-1].error.startswith("corrupt tar: unreadable data after the last readable member")


def test_brace_ranges_and_globs_select_shards(tmp_path):
    corpora.write_image_tars(tmp_path, 2, 3)
    every = [r.key for r in all_records("image_text", [tmp_path])]
    assert [r.key for r in all_records("image_text", [f"{tmp_path}/shard-{{000..002}}.tar"])] == every
    assert [r.key for r in all_records("image_text", [f"{tmp_path}/shard-*.tar"])] == every
    assert [r.key for r in all_records("image_text", [f"{tmp_path}/shard-{{001..002}}.tar"])] == every[2:]
    assert [r.key for r in all_records("image_text", [f"{tmp_path}/shard-{{000,002}}.tar"])] == every[:2] + every[4:]
    with pytest.raises(ValueError, match=rf"2 of the 5 files it names do not exist: {tmp_path}/shard-003.tar, "):
        open_sources("image_text", [f"{tmp_path}/shard-{{000..004}}.tar"])


@pytest.mark.parametrize("metadata", ["jsonl", "csv", "txt"])
def test_imagefolder_captions_from_metadata_or_beside_the_image(tmp_path, metadata):
    corpora.write_imagefolder(tmp_path, 6, metadata=metadata, corrupt=True)
    got = records("image_text", [tmp_path])
    recs = by_key(got["imagefolder"])
    assert list(got) == ["imagefolder"]
    assert sorted(recs) == ["broken.png", "img000.png", "img001.png", "img003.png", "img004.jpg",
                            "nocaption.png", "sub/img002.png", "sub/img005.jpg"]
    assert recs["sub/img005.jpg"].text == corpora.caption(5) and recs["img004.jpg"].media_ext == "jpg"
    assert recs["sub/img002.png"].media_path == str(tmp_path / "sub" / "img002.png")
    assert recs["broken.png"].error is None  # decoding is the pipeline's
    assert reasons(recs.values()) == {"missing caption": 1} and recs["nocaption.png"].error == "missing caption"


def test_imagefolder_metadata_in_a_subfolder_a_missing_file_and_a_caption_field(tmp_path):
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "a.png").write_bytes(corpora.image_bytes(0))
    (tmp_path / "part" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "alt": "first"}) + "\n" + json.dumps({"file_name": "gone.png", "alt": "x"}))
    recs = all_records("image_text", [tmp_path], caption_field="alt")
    assert [(r.key, r.text, r.error) for r in recs] == [("part/a.png", "first", None),
                                                        ("part/gone.png", "x", "missing image file")]
    with pytest.raises(ValueError, match=r"metadata.jsonl: an imagefolder metadata file needs a 'file_name' and a "
                                         r"caption field \('caption' or 'text'\); it has file_name, alt"):
        open_sources("image_text", [str(tmp_path)])


@pytest.mark.parametrize("struct", [True, False])
def test_image_parquet_struct_or_binary_and_field_overrides(tmp_path, struct):
    path = corpora.write_image_parquet(tmp_path, 5, struct=struct)
    recs = all_records("image_text", [path])
    assert [r.key for r in recs] == [f"images.parquet:{i}" for i in range(5)]
    assert [r.media_ext for r in recs] == ["png", "jpg", "png", "jpg", "png"] and not reasons(recs)
    assert recs[1].media == corpora.image_bytes(1, "JPEG", "RGB") and recs[3].text == corpora.caption(3)
    other = corpora.write_image_parquet(tmp_path / "o", 2, struct=struct, image_field="pixels", caption_field="alt")
    assert len(all_records("image_text", [other], image_field="pixels", caption_field="alt")) == 2
    with pytest.raises(ValueError, match=r"images.parquet: no image column 'image' or 'jpg' or 'png' or 'img' "
                                         r"\(it has pixels, alt\); name it with --image-field"):
        open_sources("image_text", [str(other)])


# ---------------------------------------------------------------------------------------------
# audio-text


def test_librispeech_utterances_and_its_two_reasons(tmp_path):
    corpora.write_librispeech(tmp_path, speakers=2, chapters=1, utterances=3, corrupt=True)
    got = records("audio_text", [tmp_path])
    recs = by_key(got["librispeech"])
    assert list(got) == ["librispeech"]
    assert sorted(recs) == [f"100-200-{u:04d}" for u in range(6)] + [f"101-200-{u:04d}" for u in range(3)]
    assert recs["100-200-0000"].text == "THE CAT SAT ON THE MAT"
    assert recs["101-200-0002"].media_path == str(tmp_path / "101" / "200" / "101-200-0002.flac")
    assert recs["101-200-0002"].media_ext == "flac"
    assert recs["100-200-0004"].error == "missing audio file" and recs["100-200-0005"].error == "missing transcript"
    assert recs["100-200-0003"].error is None  # the cut FLAC is the pipeline's to find
    assert reasons(recs.values()) == {"missing audio file": 1, "missing transcript": 1}


def test_the_speech_fixtures_vary_rate_and_channels(tmp_path):
    corpora.write_librispeech(tmp_path, speakers=1, chapters=1, utterances=4)
    infos = [sf.info(str(p)) for p in sorted(tmp_path.rglob("*.flac"))]
    assert {i.samplerate for i in infos} == {16_000, 22_050} and {i.channels for i in infos} == {1, 2}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_manifests_resolve_relative_paths_against_their_folder(tmp_path, fmt):
    path = corpora.write_audio_manifest(tmp_path / "m", fmt=fmt, n=4, corrupt=True)
    recs = all_records("audio_text", [path])
    assert [r.key for r in recs] == [f"manifest.{fmt}:{line}" for line in range(1 if fmt == "jsonl" else 2, 9 - (fmt == "jsonl"))]
    assert [r.text for r in recs[:4]] == [corpora.SENTENCES[i] for i in range(4)]
    assert recs[1].media_path == str(tmp_path / "m" / "clips" / "001.wav") and Path(recs[1].media_path).is_file()
    assert [r.media_ext for r in recs[:3]] == ["flac", "wav", "ogg"]
    assert recs[4].error is None and not Path(recs[4].media_path).exists()  # the pipeline's to reject
    assert reasons(recs) == {"empty transcript": 1, "missing audio field": 1}


def test_manifest_fields_absolute_paths_and_nemo_names(tmp_path):
    nemo = corpora.write_audio_manifest(tmp_path / "nemo", n=2, audio_field="audio_filepath", absolute=True)
    recs = all_records("audio_text", [nemo])
    assert recs[0].media_path == str((tmp_path / "nemo" / "clips" / "000.flac").resolve()) and not reasons(recs)
    odd = corpora.write_audio_manifest(tmp_path / "odd", fmt="csv", n=2, audio_field="wav", transcript_field="words")
    assert [r.text for r in all_records("audio_text", [odd], audio_field="wav", transcript_field="words")] == [
        corpora.SENTENCES[0], corpora.SENTENCES[1]]
    with pytest.raises(ValueError, match=r"manifest.csv: not an audio manifest: no audio path field 'audio' or 'path' "
                                         r"or 'file_name' or 'audio_filepath' or 'file' \(name it with --audio-field\); "
                                         r"no transcript field .*; it has wav, words"):
        open_sources("audio_text", [str(odd)])


def test_a_tinyworld_speech_folder_is_a_manifest_source(tmp_path):
    from trimdm.data.tinyworld.speech import write_speech_folder

    write_speech_folder(tmp_path, corpora.speech_pool()[:2])
    (tmp_path / "speakers.csv").write_text("id,name\n1,a\n")  # not a manifest: passed over in a folder
    recs = all_records("audio_text", [tmp_path])
    assert [(r.key, r.text, r.media_path) for r in recs] == [
        ("transcripts.jsonl:1", corpora.SENTENCES[0], str(tmp_path / "wavs" / "000000.wav")),
        ("transcripts.jsonl:2", corpora.SENTENCES[1], str(tmp_path / "wavs" / "000001.wav"))]


def test_audio_tars_with_text_or_json_transcripts_and_their_reasons(tmp_path):
    corpora.write_audio_tars(tmp_path / "t", 2, 2, corrupt=True)
    recs = all_records("audio_text", [f"{tmp_path}/t/speech-{{000..001}}.tar"])
    assert [r.key for r in recs] == [f"speech-00{min(i // 2, 1)}.tar/{i:06d}" for i in range(6)]
    assert [r.media_ext for r in recs[:4]] == ["flac", "wav", "ogg", "flac"]
    assert sniff_ext(recs[1].media) == "wav" and recs[0].text == corpora.SENTENCES[0]
    assert [r.error for r in recs[4:]] == ["missing audio", "missing transcript"]
    corpora.write_audio_tars(tmp_path / "j", 2, 1, json_transcripts=True)
    assert [r.text for r in all_records("audio_text", [tmp_path / "j"])] == list(corpora.SENTENCES[:2])


# ---------------------------------------------------------------------------------------------
# keys and fingerprints


def _texts(kind, spec):
    return {r.key: (r.text, r.error) for r in all_records(kind, [spec])}


def _grow_jsonl(d):
    with open(Path(d) / "docs.jsonl", "a") as f:
        f.write(json.dumps({"text": "an appended document"}) + "\n")


GROWTH = {  # kind, writer of the corpus, what "more data" is
    "text": ("text", corpora.write_text_files, _grow_jsonl),
    "tars": ("image_text", lambda d: corpora.write_image_tars(d, 2, 2), lambda d: corpora.write_image_tars(d, 2, 3)),
    "imagefolder": ("image_text", lambda d: corpora.write_imagefolder(d, 4), lambda d: corpora.write_imagefolder(d, 6)),
    "librispeech": ("audio_text", lambda d: corpora.write_librispeech(d, 1, 1, 2),
                    lambda d: corpora.write_librispeech(Path(d) / "more", 1, 1, 1, first_speaker=102)),
}


@pytest.mark.parametrize("case", sorted(GROWTH))
def test_keys_survive_added_data_and_ignore_the_path_typed(tmp_path, monkeypatch, case):
    kind, write, grow = GROWTH[case]
    write(tmp_path / "data")
    before = _texts(kind, str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert _texts(kind, "data") == before and _texts(kind, "./data/../data") == before
    grow(tmp_path / "data")
    after = _texts(kind, "data")
    assert len(after) > len(before) and before.items() <= after.items()


def test_fingerprints_list_files_and_notice_a_change(tmp_path):
    corpora.write_image_tars(tmp_path, 2, 2)
    (source,) = open_sources("image_text", [str(tmp_path)], SourceOptions(caption_field="alt"))
    first = source.fingerprint()
    assert json.loads(json.dumps(first)) == first
    assert [f[0] for f in first["files"]] == ["shard-000.tar", "shard-001.tar"] and first["n_files"] == 2
    assert first["settings"] == {"caption_field": "alt"} and first["format"] == "webdataset"
    assert open_sources("image_text", [str(tmp_path)], SourceOptions(caption_field="alt"))[0].fingerprint() == first
    os.utime(tmp_path / "shard-001.tar", ns=(1, 1))
    assert source.fingerprint()["sha256"] != first["sha256"]


# ---------------------------------------------------------------------------------------------
# checks before any work


def test_a_missing_path_or_an_empty_pattern_is_named(tmp_path):
    missing = tmp_path / "nope"
    for kind in ("text", "image_text", "audio_text"):
        with pytest.raises(ValueError, match=rf"^{missing}: no such file or folder$"):
            open_sources(kind, [str(missing)])
    with pytest.raises(ValueError, match=rf"^{tmp_path}/\*.tar: the pattern matches no file$"):
        open_sources("image_text", [f"{tmp_path}/*.tar"])
    with pytest.raises(ValueError, match=r"the pattern matches no file"):
        open_sources("image_text", [f"{tmp_path}/{{000..009}}.tar"])


@pytest.mark.parametrize("kind, expected", [("text", ".txt, .jsonl, .json"), ("image_text", ".tar shards"),
                                            ("audio_text", "a LibriSpeech folder")])
def test_an_unrecognised_file_or_folder_is_named_with_the_formats_expected(tmp_path, kind, expected):
    (tmp_path / "blob.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=rf"{tmp_path}/blob.bin: not a recognised .*; expected {expected}"):
        open_sources(kind, [str(tmp_path / "blob.bin")])
    with pytest.raises(ValueError, match=rf"{tmp_path}: no .* source found in this folder; expected {expected}"):
        open_sources(kind, [str(tmp_path)])


def test_a_source_without_records_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=rf"{tmp_path}/empty.jsonl: the jsonl source holds no records"):
        open_sources("text", [str(tmp_path / "empty.jsonl")])
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": " "}\n')
    with pytest.raises(ValueError, match=r"blank.jsonl: the jsonl source holds no usable record; all 2 are "
                                         r"rejected \(empty document: 2\)"):
        open_sources("text", [str(tmp_path / "blank.jsonl")])
    from webdataset import TarWriter

    with TarWriter(str(tmp_path / "labels.tar")) as w:
        w.write({"__key__": "a", "cls": b"1"})
    with pytest.raises(ValueError, match=r"labels.tar: the webdataset source holds no usable record; all 1 are "
                                         r"rejected \(missing image: 1\)"):
        open_sources("image_text", [str(tmp_path / "labels.tar")])
    (tmp_path / "not-a.tar").write_bytes(b"hello" * 200)
    with pytest.raises(ValueError, match=r"not-a.tar: the webdataset source holds no usable record.*corrupt tar: 1"):
        open_sources("image_text", [str(tmp_path / "not-a.tar")])
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a caption with no image")
    with pytest.raises(ValueError, match=rf"{tmp_path}/captions: no image-text source found in this folder"):
        open_sources("image_text", [str(tmp_path / "captions")])


def test_arguments_and_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown source kind 'video'"):
        open_sources("video", [str(tmp_path)])
    with pytest.raises(ValueError, match=r"non-empty list of paths"):
        open_sources("text", str(tmp_path))
    with pytest.raises(ValueError, match=r"SourceOptions.text_field must be a non-empty string"):
        SourceOptions(text_field="")


@pytest.mark.parametrize("value, expected", [
    (b"caf\xc3\xa9 ", ("café", None)), (b"caf\xe9", (None, "non-UTF-8 text")), ("a\udce9b", (None, "non-UTF-8 text")),
    ("\n\t ", (None, "empty caption")), (None, (None, "missing caption")), (3, (None, "caption is not a string: int")),
    (" Mixed CASE  kept ", ("Mixed CASE  kept", None))])
def test_clean_text_decodes_strictly_and_strips_only(value, expected):
    assert clean_text(value, "caption") == expected


def test_records_are_plain_frozen_data():
    r = Record("k", "src", "t", media=b"x", media_ext="png")
    with pytest.raises(AttributeError):
        r.text = "u"
    assert (r.media_path, r.error) == (None, None)
    with pytest.raises(TypeError):
        Record("k", "src", "t", b"x")  # media and the rest by name only


def test_sniffing_media_types():
    assert [sniff_ext(corpora.image_bytes(0, f, "RGB")) for f in ("PNG", "JPEG", "WEBP", "GIF", "BMP")] == [
        "png", "jpg", "webp", "gif", "bmp"]
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100, np.float32), 16_000, format="FLAC")
    assert sniff_ext(buf.getvalue()) == "flac" and sniff_ext(b"???") is None
