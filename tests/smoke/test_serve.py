"""`trimdm serve` on the tiny tri-modal run: every task over the API gives `trimdm generate`'s bits and
sidecars, the stream reveals the canvas step by step, every limit answers with a JSON error, hostile
input names no path, and under load the queue is FIFO, full at its maximum (503 + Retry-After) and drops
the jobs of clients that went away. The queue tests run a real uvicorn server on a loopback port."""
import base64
import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from trimdm.sample.run import generate
from trimdm.serve.app import Limits, create_app
from trimdm.train.run import load_run

QUIET = {"log": lambda *a: None}
FAST = {"text": {"steps": 3}, "image": {"steps": 4}, "audio": {"steps": 4}, "gen_len": 8}
FAST_ARGS = ["sample.text.steps=3", "sample.image.steps=4", "sample.audio.steps=4", "sample.gen_len=8"]
LIMITS = Limits(max_n=4, max_steps=64, max_prompt_chars=200, max_upload_bytes=256 << 10, max_pixels=128 * 128,
                max_audio_seconds=5.0)


@pytest.fixture(scope="module")
def loaded(tiny_tri_run):
    return load_run(tiny_tri_run[1])


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(create_app(loaded, LIMITS, max_queue=4)) as c:
        yield c


@pytest.fixture(scope="module")
def media(tiny_tri_run, tmp_path_factory):
    """A PNG and a WAV the run made (t2i, t2s), as files and bytes."""
    out = tmp_path_factory.mktemp("serve_media")
    generate(str(tiny_tri_run[1]), "t2i", "a red circle in the centre", n=1, seed=0, out=str(out / "t2i"),
             overrides=FAST_ARGS, **QUIET)
    generate(str(tiny_tri_run[1]), "t2s", "a blue square", n=1, seed=0, out=str(out / "t2s"), overrides=FAST_ARGS,
             **QUIET)
    return {"png": out / "t2i" / "000.png", "wav": out / "t2s" / "000.wav"}


def post(client, body: dict, upload: tuple | None = None, url="/api/generate"):
    """JSON, or a multipart form (settings as JSON) with `upload` = (file name, bytes) in field input."""
    if upload is None:
        return client.post(url, json=body)
    fields = {k: json.dumps(v) if k == "settings" else str(v) for k, v in body.items()}
    return client.post(url, data=fields, files={"input": upload})


def sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def assert_error(resp, status: int, match: str = ""):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert list(body) == ["error"] and match.lower() in body["error"].lower(), body
    assert "Traceback" not in resp.text and 'File "' not in resp.text


CASES = [  # (API body, upload kind or None, generate's arguments)
    ({"task": "text", "prompt": "a red", "n": 2, "seed": 3}, None, {}),
    ({"task": "t2i", "prompt": "a red circle in the centre", "n": 2, "seed": 1}, None, {}),
    ({"task": "t2s", "prompt": "a blue square", "n": 1, "seed": 2}, None, {}),
    ({"task": "i2t", "n": 1, "seed": 4}, "png", {}),
    ({"task": "s2t", "n": 1, "seed": 5}, "wav", {}),
    ({"task": "infill", "prompt": "a red circle in the centre", "n": 2, "seed": 6, "span": "2:12"}, None, {}),
    ({"task": "infill", "n": 2, "seed": 7, "span": "9:12,17:20,25:28"}, "png", {}),  # a rectangle's cells
    ({"task": "infill", "prompt": "a blue square", "n": 1, "seed": 8, "span": "0.1:0.3"}, "wav", {}),
]


@pytest.mark.parametrize("body, upload, _", CASES, ids=[f"{c[0]['task']}-{c[1]}" for c in CASES])
def test_the_api_gives_generates_bits_and_sidecars(client, tiny_tri_run, media, tmp_path, body, upload, _):
    run = str(tiny_tri_run[1])
    files = (media[upload].name, media[upload].read_bytes()) if upload else None
    resp = post(client, {**body, "settings": FAST}, files)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    sides = generate(run, body["task"], body.get("prompt", ""), body["n"], body["seed"], FAST_ARGS,
                     input_path=str(media[upload]) if upload else None, span=body.get("span"), out=str(tmp_path),
                     **QUIET)
    assert [o["name"] for o in got["outputs"]] == [s["output"] for s in sides]
    for out, side in zip(got["outputs"], sides):
        assert base64.b64decode(out["base64"]) == (tmp_path / side["output"]).read_bytes()  # byte-identical
        assert out["sidecar"]["input"] == (media[upload].name if upload else None)  # a label, never a path
        assert {**out["sidecar"], "input": None} == json.loads(json.dumps({**side, "input": None}))
        assert out["text"] == side.get("text")
    if (tmp_path / "grid.png").exists():
        assert base64.b64decode(got["grid"]["base64"]) == (tmp_path / "grid.png").read_bytes()
    else:
        assert got["grid"] is None


def test_the_stream_reveals_the_canvas_step_by_step(client):
    body = {"task": "t2i", "prompt": "a red circle in the centre", "n": 2, "seed": 1,
            "settings": {**FAST, "image": {"steps": 6}}}
    resp = client.post("/api/generate/stream", json=body)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse(resp.text)
    kinds = [e for e, _ in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done" and "step" in kinds
    assert events[0][1]["position"] == 1
    steps = [d for e, d in events if e == "step"]
    assert steps[-1]["step"] == steps[-1]["steps"] == 6 and all(d["target"] == "image" for d in steps)
    grey = []
    for d in steps:
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in d["images"]]
        assert len(images) == 2 and all(im.shape == (32, 32, 3) for im in images)
        grey.append(sum(int((im == 150).all(-1).sum()) for im in images))  # hidden patches are grey
    assert grey == sorted(grey, reverse=True) and grey[0] > 0 and grey[-1] == 0
    plain = client.post("/api/generate", json=body).json()
    done = events[-1][1]
    assert [o["base64"] for o in done["outputs"]] == [o["base64"] for o in plain["outputs"]]

    text = sse(client.post("/api/generate/stream", json={"task": "text", "prompt": "a red", "n": 1,
                                                          "settings": {"text": {"steps": 4}, "gen_len": 8}}).text)
    texts = [d["texts"][0] for e, d in text if e == "step"]
    assert "░" in texts[0] and "░" not in texts[-1] and texts[-1] == text[-1][1]["outputs"][0]["text"]


def test_the_run_card_examples_page_and_schema(client, loaded):
    import dataclasses

    card = client.get("/api/run").json()
    assert card["sampling"] == json.loads(json.dumps(dataclasses.asdict(loaded.cfg.sample)))  # the form's defaults
    assert card["image"]["grid"] ** 2 == card["image"]["tokens"] == 64 and card["image"]["size"] == 32
    assert set(card["tasks"]) == {"text", "t2i", "i2t", "t2s", "s2t", "infill"}
    assert card["limits"]["max_n"] == LIMITS.max_n and card["vocab"]["size"] == loaded.vocab.size
    assert client.get("/api/health").json()["status"] == "ok"
    image = client.get("/api/examples/image", params={"index": 3}).json()
    assert Image.open(io.BytesIO(base64.b64decode(image["base64"]))).size == (32, 32) and image["text"]
    audio = client.get("/api/examples/audio").json()
    assert sf.read(io.BytesIO(base64.b64decode(audio["base64"])))[0].size > 0 and audio["text"]
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/generate", "/api/generate/stream", "/api/run", "/api/health"} <= set(paths)
    assert "multipart/form-data" in paths["/api/generate"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # FastAPI's docs pages load scripts from a CDN: off


@pytest.mark.parametrize("body, status, match", [
    ({"task": "t2i", "prompt": "a red circle", "n": 5}, 400, "at most 4 outputs"),
    ({"task": "t2i", "prompt": "a red circle", "n": 0}, 422, "n:"),
    ({"task": "t2i", "prompt": "a red circle", "settings": {"image": {"steps": 65}}}, 400, "at most 64"),
    ({"task": "t2i", "prompt": "x" * 201}, 400, "at most 200"),
    ({"task": "infill", "prompt": "a red circle", "span": "1:2," * 60}, 400, "span of"),
    ({"task": "t2i", "prompt": "a red circle", "settings": {"rerank": 9}}, 400, "sample.rerank=9"),
    ({"task": "t2i", "prompt": "a red circle", "settings": {"image": {"stepz": 3}}}, 400, "unknown config key"),
    ({"task": "t2i", "prompt": "a red circle", "settings": {"image": {"steps": "many"}}}, 400, "steps"),
    ({"task": "t2i", "prompt": "a red circle", "settings": {"image": {"steps": None}}}, 400, "not a number"),
    ({"task": "draw", "prompt": "a red circle"}, 422, "task"),
    ({"task": "t2i", "prompt": "  "}, 400, "non-empty"),
    ({"task": "i2t"}, 400, "needs --input"),
    ({"task": "t2i", "prompt": "a red circle", "seed": -1}, 422, "seed"),
    ({"task": "infill", "prompt": "a red circle", "span": "9:2"}, 400, "START < END"),
    ({"task": "text", "prompt": "a red", "settings": {"gen_len": 500}}, 400, "positions"),  # found by the worker
])
def test_every_limit_answers_a_json_error(client, body, status, match):
    assert_error(client.post("/api/generate", json=body), status, match)


def test_bodies_that_are_not_requests(client):
    assert_error(client.post("/api/generate", content=b"task=t2i", headers={"content-type": "text/plain"}), 415)
    assert_error(client.post("/api/generate", content=b"{nope", headers={"content-type": "application/json"}), 400,
                 "not JSON")
    assert_error(client.post("/api/generate", json=["t2i"]), 422)
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/api/generate"), 405)
    big = {"task": "t2i", "prompt": "a", "pad": "x" * (LIMITS.max_json_bytes + 1)}
    assert_error(client.post("/api/generate", json=big), 413)
    assert_error(client.post("/api/generate", json={"task": "t2i", "prompt": "a red circle"},
                             headers={"origin": "http://evil.example"}), 403, "refused")


def test_uploads_are_checked_by_content_and_size(client, media):
    png, wav = media["png"].read_bytes(), media["wav"].read_bytes()
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(LIMITS.max_upload_bytes + 16)
    assert_error(post(client, {"task": "i2t"}, ("big.png", too_big)), 413)

    def chunks():  # no Content-Length: the streamed size is what is checked
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="task"\r\n\r\ni2t\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="input"; filename="big.png"\r\n\r\n'
        for _ in range(LIMITS.max_upload_bytes // 4096 + 32):
            yield bytes(4096)
        yield b"\r\n" + boundary + b"--\r\n"
    assert_error(client.post("/api/generate", content=chunks(),
                             headers={"content-type": "multipart/form-data; boundary=b0undary"}), 413)
    assert_error(post(client, {"task": "i2t"}, ("scene.png", png[: len(png) // 2])), 400, "scene.png: not a readable")
    assert_error(post(client, {"task": "i2t"}, ("scene.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)), 400, "not a readable")
    assert_error(post(client, {"task": "s2t"}, ("voice.wav", b"RIFF\x10\0\0\0WAVEfmt junk")), 400,
                 "voice.wav: not a readable audio")
    assert_error(post(client, {"task": "s2t"}, ("voice.wav", wav[: len(wav) // 2])), 400, "truncated")
    assert_error(post(client, {"task": "i2t"}, ("x.png", b"")), 400, "empty")
    assert_error(post(client, {"task": "i2t"}, ("voice.wav", wav)), 400, "needs an image")
    assert_error(post(client, {"task": "t2i", "prompt": "a red circle"}, ("x.png", png)), 400, "takes no input")
    large = io.BytesIO()
    Image.new("RGB", (200, 200)).save(large, format="PNG")  # 40,000 pixels > 128 × 128, refused before decoding
    assert_error(post(client, {"task": "i2t"}, ("large.png", large.getvalue())), 400, "200×200 pixels")
    long = io.BytesIO()
    sf.write(long, np.zeros(16000 * 6, dtype=np.float32), 16000, format="WAV")
    assert_error(post(client, {"task": "s2t"}, ("long.wav", long.getvalue())), 400, "6.0 s of audio")
    # the kind comes from the content: a PNG named .wav is an image
    ok = post(client, {"task": "i2t", "n": 1, "settings": FAST}, ("misnamed.wav", png))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["sidecar"]["input"] == "misnamed.wav"
    assert_error(client.post("/api/generate", data={"task": "i2t"}, files={"input": (None, "/etc/passwd")}), 400,
                 "only field 'input'")  # a multipart text field named input: a path string, refused
    assert_error(client.post("/api/generate", data={"task": "i2t", "input": "/etc/passwd"}), 415)  # urlencoded


def test_nothing_in_a_request_names_a_path(client, tiny_tri_run, media):
    run = tiny_tri_run[1]
    before = sorted(p for p in run.rglob("*"))
    ok = post(client, {"task": "t2i", "prompt": "../../etc/passwd", "n": 1, "settings": FAST})
    assert ok.status_code == 200  # a caption like any other
    up = post(client, {"task": "i2t", "n": 1, "settings": FAST}, ("../../etc/passwd", media["png"].read_bytes()))
    assert up.status_code == 200 and up.json()["outputs"][0]["sidecar"]["input"] == "passwd"
    assert_error(client.post("/api/generate", json={"task": "i2t", "input": "../../etc/passwd"}), 400, "opens no path")
    for settings in ({"data": {"root": "/etc"}}, {"checkpoint": "/etc/passwd"}, {"../data.root": "/tmp"},
                     {"image": {"schedule": "../../etc/passwd"}}, {"seed": "../../etc/passwd"}):
        assert_error(client.post("/api/generate", json={"task": "t2i", "prompt": "a", "settings": settings}), 400)
    for field in ("out", "run", "input_path"):
        assert_error(client.post("/api/generate", json={"task": "t2i", "prompt": "a", field: "/tmp/x"}), 422, field)
    assert client.get("/static/../../../../etc/passwd").status_code == 404
    assert client.get("/static/%2e%2e/%2e%2e/app.py").status_code == 404
    assert client.get("/api/examples/..%2f..%2fetc").status_code in (404, 422)
    assert sorted(p for p in run.rglob("*")) == before  # the server wrote nothing into the run


def test_a_failure_inside_a_job_or_a_route_is_a_json_500(loaded, monkeypatch):
    import trimdm.serve.app as app_module

    app = create_app(loaded, LIMITS)
    with TestClient(app, raise_server_exceptions=False) as c:
        def broken(*a, **k):
            raise RuntimeError("secret internals")
        monkeypatch.setattr(app_module, "produce", broken)
        resp = c.post("/api/generate", json={"task": "t2i", "prompt": "a red circle"})
        assert_error(resp, 500, "internal error (RuntimeError)")
        assert "secret" not in resp.text
        monkeypatch.setattr(app.state.server, "examples", broken)
        assert_error(c.get("/api/examples/image"), 500, "internal error")
        assert c.get("/api/health").json()["error"] == 1
    # a loopback server answers only to loopback names in Host (DNS rebinding)
    with TestClient(create_app(loaded, LIMITS, allowed_hosts=["127.0.0.1", "localhost"])) as c:
        assert_error(c.get("/api/run"), 400, "not a name of this server")
        assert c.get("/api/run", headers={"host": "localhost:8000"}).status_code == 200


# -- a real server: queueing, a full queue, clients that go away ---------------------------------------
class Live:
    """uvicorn serving `app` in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.app, self.server = app, uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)

    @property
    def queue(self):
        return self.app.state.server.queue

    def open_stream(self, body: dict, path="/api/generate/stream"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        return conn, conn.getresponse()

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


def next_event(resp) -> tuple[str, dict]:
    event = None
    while True:
        line = resp.readline().decode()
        assert line, "stream ended"
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event:
            return event, json.loads(line[6:])


def wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def live(loaded):
    server = Live(create_app(loaded, LIMITS, max_queue=2, start_paused=True))
    yield server
    server.queue.resume()
    server.close()


def test_a_full_queue_answers_503_and_the_queue_is_fifo(live):
    body = {"task": "t2i", "prompt": "a red circle", "n": 1, "settings": FAST}
    a, b = live.open_stream({**body, "seed": 1}), live.open_stream({**body, "seed": 2})
    assert next_event(a[1]) == ("queued", {"position": 1, "ahead": 0, "queued": 1})
    assert next_event(b[1]) == ("queued", {"position": 2, "ahead": 1, "queued": 2})
    conn, full = live.open_stream(body, "/api/generate")
    assert full.status == 503 and int(full.getheader("Retry-After")) >= 1
    assert "queue is full" in json.loads(full.read())["error"]
    conn.close()
    live.queue.resume()
    assert next_event(a[1])[0] == "started"
    assert next_event(b[1]) == ("queued", {"position": 1, "ahead": 1, "queued": 1})  # moved up
    for conn, resp in (a, b):
        kinds = []
        while not kinds or kinds[-1] != "done":
            kinds.append(next_event(resp)[0])
        assert set(kinds) == {"step", "done"} | ({"started"} if resp is b[1] else set()), kinds
        conn.close()
    assert live.queue.status()["done"] == 2


def test_a_client_that_goes_away_has_its_job_cancelled(live, monkeypatch):
    server = live.app.state.server
    # queued: removed from the queue, by the stream and by the plain API
    conn, resp = live.open_stream({"task": "t2i", "prompt": "a red circle", "n": 1, "settings": FAST})
    assert next_event(resp)[0] == "queued"
    conn.close()
    wait_for(lambda: live.queue.status()["queued"] == 0, "the queued job to leave")
    raw = socket.create_connection(("127.0.0.1", live.port))
    body = json.dumps({"task": "t2i", "prompt": "a red circle", "n": 1, "settings": FAST}).encode()
    raw.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_for(lambda: live.queue.status()["queued"] == 1, "the plain request to queue")
    raw.close()
    wait_for(lambda: live.queue.status()["queued"] == 0, "the plain request's job to leave")
    assert live.queue.status()["cancelled"] == 2
    # running: stopped at its next step (each step made slow, so that it cannot finish first)
    slow = server.preview

    def slow_preview(step):
        time.sleep(0.1)
        return slow(step)
    monkeypatch.setattr(server, "preview", slow_preview)
    live.queue.resume()
    conn, resp = live.open_stream({"task": "t2i", "prompt": "a red circle", "n": 1,
                                   "settings": {"image": {"steps": 64}}})
    while next_event(resp)[0] != "step":
        pass
    conn.close()
    wait_for(lambda: not live.queue.status()["running"], "the running job to stop", timeout=5)
    status = live.queue.status()
    assert status["cancelled"] == 3 and status["done"] == 0


def test_serve_refuses_a_missing_run_and_stray_settings(tmp_path, capsys):
    from trimdm.cli import main

    assert main(["serve", "--run", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["serve", "--run", str(tmp_path), "sample.image.steps=3"]) == 2
    assert "no key=value settings" in capsys.readouterr().err


def test_a_model_folder_serves_as_its_run_does(tiny_tri_run, tmp_path):
    """An exported folder: same card (its eval table included) and the same bits for one request."""
    from trimdm.train.export import export_run

    folder = export_run(tiny_tri_run[1], tmp_path / "model")
    body = {"task": "t2i", "prompt": "a red circle in the centre", "n": 1, "seed": 3, "settings": FAST}
    answers = []
    for source in (tiny_tri_run[1], folder):
        with TestClient(create_app(load_run(source), LIMITS, max_queue=2)) as c:
            card = c.get("/api/run").json()
            resp = post(c, body)
            assert resp.status_code == 200, resp.text
            answers.append((card["config"], card["eval"], card["sampling"],
                            [o["base64"] for o in resp.json()["outputs"]]))
    assert answers[0] == answers[1]


def test_the_card_shows_only_an_eval_of_the_checkpoint_served(tiny_tri_run, tmp_path):
    """RUN/eval.json's figures are on the card when it evaluates the checkpoint served, and on a model
    folder's card when it evaluates the run's checkpoint the folder was exported from; an eval.json of
    another step is left off, by name."""
    import shutil

    from trimdm.serve.card import run_card
    from trimdm.train.checkpoint import latest_checkpoint
    from trimdm.train.export import export_run

    run = tmp_path / "run"  # a copy: the shared run keeps no eval.json of this test's
    run.mkdir()
    for name in ("checkpoints", "tokenizer", "tokenizers"):
        shutil.copytree(tiny_tri_run[1] / name, run / name)
    for name in ("config.json", "vocab.json"):
        shutil.copyfile(tiny_tri_run[1] / name, run / name)
    latest = latest_checkpoint(run)
    earlier = latest.with_name("step_00000010")
    ev = {"nelbo": {"text": {"bits_per_token": 3.25, "tokens": 1000}}, "tau_points": 2, "checkpoint": str(latest)}

    def card_eval(source):
        return run_card(load_run(source), LIMITS)["eval"]

    (run / "eval.json").write_text(json.dumps({**ev, "items": [1, 2]}))
    assert card_eval(run) == ev  # the figures, without the per-item lists
    folder = export_run(run, tmp_path / "model", log=lambda *a: None)
    assert card_eval(folder) == ev  # the folder's copy names the run's checkpoint, which it holds
    (run / "eval.json").write_text(json.dumps({**ev, "checkpoint": str(earlier)}))
    assert card_eval(run) == {"other_checkpoint": earlier.name}
    meta = json.loads((folder / "config.json").read_text())  # (config.json is outside the manifest)
    meta["trained"]["checkpoint"] = earlier.name  # as if exported from the earlier step
    (folder / "config.json").write_text(json.dumps(meta))
    assert card_eval(folder) == {"other_checkpoint": latest.name}
    (run / "eval.json").unlink()
    assert card_eval(run) is None
