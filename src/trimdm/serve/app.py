"""`trimdm serve --run DIR`: the HTTP API and the web page of one trained run (docs/serve.md).

    GET  /                      the page (static/: plain HTML, JS and CSS shipped with the package)
    GET  /api/health            {"status": "ok", queue figures}
    GET  /api/run               the run's card: config summary, vocabulary, sampling defaults, limits, eval
    GET  /api/examples/{m}      a validation image or utterance of the run's data set (?index=K)
    POST /api/generate          run a task: JSON, or multipart with the uploaded file in field `input`
    POST /api/generate/stream   the same, answered as server-sent events while it decodes
    GET  /openapi.json          the API's schema (FastAPI; its /docs pages are off: they load scripts
                                from a CDN, and this server serves everything it shows itself)

Owns: the app, request parsing and limits, error bodies (`{"error": message}`, never a traceback), the
upload checks (by content: PIL and soundfile open them; their names are labels only), and the event
stream. One model is loaded once; jobs run one at a time in FIFO order (jobs.py). A request names no
path on the server: inputs are uploads, outputs come back in the answer, and settings are the
`sample.*` keys of the run's config only. Does not own what a task computes: `sample.run.produce`,
which `trimdm generate` calls too, so both give the same bits and the same sidecars.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.exceptions import HTTPException

from trimdm.data.media import IMAGE_ERRORS, audio_info, read_audio, read_image
from trimdm.sample.run import MediaInput, TaskRequest, check_request, produce, sample_settings
from trimdm.serve.card import MEDIA_TYPES, example_index, run_card
from trimdm.serve.jobs import Job, JobQueue, QueueFull
from trimdm.serve.preview import Preview
from trimdm.train.run import load_run

STATIC = files("trimdm.serve") / "static"
FORM_SLACK = 64 << 10  # bytes of a multipart body besides the file: its fields and boundaries
PREVIEW_INTERVAL = 0.05  # seconds between two pictures of a canvas sent to a page (a stage's last always goes)
KEEPALIVE = 15.0  # seconds between comments on an idle event stream
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
SECURITY_HEADERS = {
    # everything the page loads comes from this server; outputs are data: and blob: URLs
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; "
                               "connect-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (docs/serve.md, "Limits")."""

    max_n: int = 16  # outputs per request
    max_steps: int = 256  # sample.<modality>.steps
    max_prompt_chars: int = 1000
    max_span_chars: int = 200
    max_upload_bytes: int = 8 << 20
    max_json_bytes: int = 64 << 10
    max_pixels: int = 4096 * 4096  # of an uploaded image, checked before it is decoded
    max_audio_seconds: float = 30.0  # of an uploaded recording, read from its header before it is decoded
    max_rerank: int = 8  # sample.rerank
    max_rerank_draws: int = 64  # sample.rerank_draws
    max_refine: int = 4  # sample.refine
    max_gen_len: int = 1024  # sample.gen_len and sample.caption_len (the rows bound them too)


class GenerateBody(BaseModel):
    """A request of `POST /api/generate` (a JSON object, or the same fields in a multipart form, with
    `settings` as a JSON string and the input file in field `input`)."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["text", "t2i", "t2s", "i2t", "s2t", "infill"]
    prompt: str = Field("", description="prompt, caption to draw, text to speak, or text to infill")
    n: int = Field(4, ge=1, description="outputs; at most the server's max_n")
    seed: int | None = Field(None, ge=0, lt=2**63, description="default: the run's sample.seed")
    settings: dict[str, Any] = Field(default_factory=dict, description="sample.* overrides, nested "
                                     "({\"image\": {\"steps\": 8}}) or dotted ({\"image.steps\": 8})")
    span: str | None = Field(None, description="infill: START:END, characters of the prompt, image token "
                             "indices (several ranges: A:B,C:D) or seconds of audio")


class OutputFile(BaseModel):
    name: str
    media_type: str
    base64: str
    text: str | None = None
    sidecar: dict[str, Any] | None = None


class GenerateResult(BaseModel):
    task: str
    n: int
    seed: int
    seconds: float
    outputs: list[OutputFile]
    grid: OutputFile | None = None


class ErrorBody(BaseModel):
    error: str


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def _label(filename: str | None) -> str:
    """An upload's name as a label (sidecars, messages): its last path part, safe characters only."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:64]
    return name or "upload"


def settings_overrides(settings: dict, prefix: str = "sample") -> list[str]:
    """`sample.*` override strings of a settings object, nested or dotted; every key one config word."""
    out = []
    for key, value in settings.items():
        if not isinstance(key, str) or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key):
            raise ValueError(f"settings: {key!r} is not a sampling setting (see GET /api/run, \"sampling\")")
        if isinstance(value, dict):
            out += settings_overrides(value, f"{prefix}.{key}")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out.append(f"{prefix}.{key}={','.join(value)}")
        elif isinstance(value, (bool, int, float, str)):
            out.append(f"{prefix}.{key}={str(value).lower() if isinstance(value, bool) else value}")
        else:
            raise ValueError(f"settings: {prefix}.{key}={value!r} is not a number, word or list of words")
    return out


def check_sampling(sample, limits: Limits) -> None:
    for m in ("text", "image", "audio"):
        if sample[m].steps > limits.max_steps:
            raise ValueError(f"sample.{m}.steps={sample[m].steps}: at most {limits.max_steps} on this server")
    for key, top in (("rerank", limits.max_rerank), ("rerank_draws", limits.max_rerank_draws),
                     ("refine", limits.max_refine), ("gen_len", limits.max_gen_len),
                     ("caption_len", limits.max_gen_len)):
        if getattr(sample, key) > top:
            raise ValueError(f"sample.{key}={getattr(sample, key)}: at most {top} on this server")


def check_upload(media: MediaInput, limits: Limits) -> None:
    """An upload is what its content says: an image PIL opens (size checked before decoding) or a
    recording soundfile reads (length checked from its header); either is decoded whole once here, so a
    truncated file is refused before it is queued."""
    if media.modality == "image":
        try:
            with Image.open(io.BytesIO(media.data)) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise ValueError(f"{media.name}: {w}×{h} pixels; at most {limits.max_pixels} on this server")
                im.verify()
        except IMAGE_ERRORS as e:
            if isinstance(e, ValueError) and str(e).startswith(media.name):
                raise
            raise ValueError(f"{media.name}: not a readable image ({type(e).__name__})") from None
        read_image(media.data, media.name)
    else:
        frames, rate = audio_info(media.data, media.name)
        if frames / rate > limits.max_audio_seconds:
            raise ValueError(f"{media.name}: {frames / rate:.1f} s of audio; at most "
                             f"{limits.max_audio_seconds:g} s on this server")
        read_audio(media.data, rate, media.name)


def _file(name: str, media_type: str, data: bytes, **extra) -> dict:
    return {"name": name, "media_type": media_type, "base64": base64.b64encode(data).decode(), **extra}


class Server:
    """The one loaded run, its queue and limits; the routes reach it as `request.app.state.server`."""

    def __init__(self, loaded, limits: Limits, max_queue: int):
        self.loaded, self.limits = loaded, limits
        self.queue = JobQueue(max_queue)
        self.preview = Preview(loaded)
        self.card = run_card(loaded, limits)
        self._examples: dict[str, list] = {}

    def examples(self, modality: str) -> list:
        if modality not in self._examples:
            self._examples[modality] = example_index(self.loaded.cfg, modality) if modality in self.card else []
        return self._examples[modality]

    def task_request(self, body: GenerateBody, media: MediaInput | None) -> tuple[TaskRequest, Any]:
        """The request and its sampling settings, checked against the limits; ValueError if refused."""
        lim = self.limits
        if body.n > lim.max_n:
            raise ValueError(f"n={body.n}: at most {lim.max_n} outputs per request on this server")
        if len(body.prompt) > lim.max_prompt_chars:
            raise ValueError(f"prompt of {len(body.prompt)} characters; at most {lim.max_prompt_chars}")
        if body.span is not None and len(body.span) > lim.max_span_chars:
            raise ValueError(f"span of {len(body.span)} characters; at most {lim.max_span_chars}")
        cfg = sample_settings(self.loaded, settings_overrides(body.settings))
        check_sampling(cfg.sample, lim)
        check_request(body.task, body.prompt, body.n, body.span, media is not None)
        if media is not None:
            wants = {"i2t": "image", "s2t": "audio", "infill": media.modality}.get(body.task)
            if wants is None:
                raise ValueError(f"task {body.task} takes no input file")
            if media.modality != wants:
                raise ValueError(f"task {body.task} needs {'an image' if wants == 'image' else 'a recording'}; "
                                 f"{media.name} is {'an image' if media.modality == 'image' else 'audio'}")
            if wants not in self.card:
                raise ValueError(f"this run has no {wants} tokenizer (it was trained without {wants})")
        seed = cfg.sample.seed if body.seed is None else body.seed
        return TaskRequest(body.task, body.prompt, body.n, seed, body.span, media), cfg.sample

    def job(self, req: TaskRequest, sample, loop, stream: bool) -> Job:
        """A queued job running `req`; a streaming one sends a picture of the canvas after its steps."""
        state = {"last": 0.0, "pass": 0}
        masks = torch.tensor([self.loaded.vocab.mask(m) for m in ("text", "image", "audio")])

        def on_step(step) -> None:
            job.check()
            if step.stage == 0 and step.step == 1 and step.first_row == 0:
                state["pass"] += 1  # a new canvas (a rerank draw, a caption length, ...)
            now = time.perf_counter()
            last = step.step == step.steps or not bool(torch.isin(step.canvas_BL, masks).any())
            if job.stream and (now - state["last"] >= PREVIEW_INTERVAL or last):
                state["last"] = now
                job.emit("step", {"pass": state["pass"], **self.preview(step)})

        def work(job: Job) -> dict:
            t0 = time.perf_counter()
            produced = produce(self.loaded, sample, req, on_step=on_step)
            outputs = [_file(o.name, o.media_type, o.data, text=o.sidecar.get("text"), sidecar=o.sidecar)
                       for o in produced.outputs]
            grid = _file("grid.png", "image/png", produced.grid) if produced.grid is not None else None
            return {"task": req.task, "n": req.n, "seed": req.seed, "seconds": round(time.perf_counter() - t0, 3),
                    "outputs": outputs, "grid": grid}

        job = Job(work, loop, stream)
        return job


# -- reading a request ------------------------------------------------------------------------------
async def bounded_body(request: Request, limit: int, what: str) -> bytes:
    """The body, refused with 413 as soon as its declared or streamed size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} of {int(declared)} bytes; at most {limit} on this server")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"{what} larger than {limit} bytes; at most {limit} on this server")
    return bytes(body)


async def _form_fields(request: Request, limits: Limits) -> tuple[dict, MediaInput | None]:
    raw = await bounded_body(request, limits.max_upload_bytes + FORM_SLACK, "upload")

    async def replay():
        return {"type": "http.request", "body": raw, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=len(GenerateBody.model_fields),
                                                     max_part_size=limits.max_json_bytes)
    fields, media = {}, None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile) != (key == "input"):
            raise HTTPException(400, f"field {key!r}: only field 'input' is a file, and it must be one "
                                     "(the server opens no path a request names)")
        if key in fields or (key == "input" and media is not None):
            raise HTTPException(400, f"field {key!r} given twice")
        if key == "input":
            data = await value.read()
            if len(data) > limits.max_upload_bytes:
                raise HTTPException(413, f"upload of {len(data)} bytes; at most {limits.max_upload_bytes}")
            if not data:
                raise HTTPException(400, "the uploaded file is empty")
            media = MediaInput(data, _label(value.filename))
        elif value != "":  # an empty form field is an absent one
            fields[key] = value
    if "settings" in fields:
        try:
            fields["settings"] = json.loads(fields["settings"])
        except json.JSONDecodeError:
            raise HTTPException(400, "settings: not a JSON object") from None
    return fields, media


async def read_request(request: Request, server: Server) -> tuple[TaskRequest, Any]:
    """A generate request's TaskRequest and sampling settings, from JSON or a multipart form."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"requests from pages of {origin} are refused; use this server's own page")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    media = None
    if kind == "multipart/form-data":
        fields, media = await _form_fields(request, server.limits)
    elif kind == "application/json":
        raw = await bounded_body(request, server.limits.max_json_bytes, "JSON body")
        try:
            fields = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(400, "the body is not JSON") from None
        if isinstance(fields, dict) and "input" in fields:
            raise HTTPException(400, "input: send the file as field 'input' of a multipart form; the server "
                                     "opens no path a request names")
    else:
        raise HTTPException(415, "send application/json or multipart/form-data")
    try:
        body = GenerateBody.model_validate(fields)
    except ValidationError as e:
        raise HTTPException(422, _validation_message(e.errors())) from None
    try:
        if media is not None:
            await run_in_threadpool(check_upload, media, server.limits)
        return server.task_request(body, media)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


def _submit(server: Server, job: Job) -> None:
    try:
        server.queue.submit(job)
    except QueueFull as e:
        raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after)}) from None


# -- routes -----------------------------------------------------------------------------------------
router = APIRouter()
ERRORS = {code: {"model": ErrorBody} for code in (400, 403, 413, 415, 422, 500, 503)}
BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": GenerateBody.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["task"], "properties": {
        **{k: {"type": "string"} for k in GenerateBody.model_fields},
        "settings": {"type": "string", "description": "a JSON object of sample.* overrides"},
        "input": {"type": "string", "format": "binary", "description": "an image or a recording"}}}}}}}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/api/health")
def health(request: Request) -> dict:
    return {"status": "ok", **request.app.state.server.queue.status()}


@router.get("/api/run")
def card(request: Request) -> dict:
    """The run's card: the page's form defaults come from `sampling`."""
    return request.app.state.server.card


@router.get("/api/examples/{modality}", responses={404: {"model": ErrorBody}})
def example(request: Request, modality: Literal["image", "audio"], index: int = 0) -> dict:
    """A validation image or utterance of the run's data set, with its caption or transcript."""
    found = request.app.state.server.examples(modality)
    if not found:
        raise HTTPException(404, f"no {modality} examples: the run's data set is not on this server "
                                 "(generate one with t2i or t2s)")
    path, text = found[index % len(found)]
    return _file(f"val-{index % len(found):03d}{path.suffix.lower()}", MEDIA_TYPES[path.suffix.lower()],
                 path.read_bytes(), text=text)


@router.post("/api/generate", response_model=GenerateResult, responses=ERRORS, openapi_extra=BODY_DOC)
async def generate(request: Request):
    """Run a task (queued FIFO behind the others); the outputs come back inline (base64) with their
    sidecars. A client that disconnects has its job cancelled."""
    server: Server = request.app.state.server
    req, sample = await read_request(request, server)
    job = server.job(req, sample, asyncio.get_running_loop(), stream=False)
    _submit(server, job)
    async for event, data in _events(job, request):
        if event == "done":
            return data
        if event == "error":
            return _error(data["status"], data["error"])
    return _error(499, "cancelled: the client went away")


@router.post("/api/generate/stream", responses=ERRORS, openapi_extra=BODY_DOC)
async def generate_stream(request: Request) -> StreamingResponse:
    """The same request answered as server-sent events: `queued` (position), `started`, `step` (a picture
    of the canvas), and last `done` (what /api/generate answers) or `error`."""
    server: Server = request.app.state.server
    req, sample = await read_request(request, server)
    job = server.job(req, sample, asyncio.get_running_loop(), stream=True)
    _submit(server, job)

    async def stream():
        async for event, data in _events(job, request, keepalive=True):
            yield f"event: {event}\ndata: {json.dumps(data)}\n\n" if event else ": keepalive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(job: Job, request: Request, keepalive: bool = False):
    """A job's events until its last; ("", {}) after each idle KEEPALIVE seconds if `keepalive`. The job
    is cancelled if the client goes (a plain request: checked while idle; a stream: when Starlette
    closes this generator on the disconnect)."""
    server: Server = request.app.state.server
    getter = None
    try:
        while True:
            getter = getter or asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait({getter}, timeout=KEEPALIVE if keepalive else 1.0)
            if not done:
                if keepalive:
                    yield "", {}
                elif await request.is_disconnected():
                    return
                continue
            event, data = getter.result()
            getter = None
            yield event, data
            if event in ("done", "error", "cancelled"):
                return
    finally:
        if getter is not None:
            getter.cancel()
        server.queue.cancel(job)  # nothing to do for a finished job


def check_host(request: Request) -> None:
    """On a loopback server, only loopback names in Host: a page elsewhere cannot reach the API through a
    name of its own that resolves to 127.0.0.1 (DNS rebinding)."""
    allowed = request.app.state.allowed_hosts
    if allowed and (request.url.hostname or "").lower() not in allowed:
        raise HTTPException(400, f"Host {request.url.hostname!r} is not a name of this server ({', '.join(allowed)})")


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP answer (plain ASGI, so streams pass through untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def create_app(run, limits: Limits = Limits(), max_queue: int = 16, allowed_hosts: list[str] | None = None,
               start_paused: bool = False) -> FastAPI:
    """The app of a run (a run or checkpoint directory, or a LoadedRun). `allowed_hosts`: Host headers
    accepted (None: any; `serve` on a loopback address passes the loopback names, against DNS
    rebinding)."""
    loaded = load_run(run) if isinstance(run, (str, Path)) else run
    server = Server(loaded, limits, max_queue)
    if start_paused:
        server.queue.pause()

    async def lifespan(app):
        server.queue.start()
        yield
        server.queue.stop()

    app = FastAPI(title="trimdm", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  dependencies=[Depends(check_host)],
                  description=f"Tri-modal masked diffusion: run {server.card['run']} (docs/serve.md)")
    app.state.server = server
    app.state.allowed_hosts = [h.strip("[]").lower() for h in allowed_hosts or []]
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_exception_handler(HTTPException, lambda r, e: _error(e.status_code, str(e.detail), e.headers))
    app.add_exception_handler(RequestValidationError, lambda r, e: _error(422, _validation_message(e.errors())))
    app.add_exception_handler(Exception, lambda r, e: _error(500, f"internal error ({type(e).__name__}); see the "
                                                             "server's log"))
    app.add_middleware(SecurityHeaders)
    return app


def serve(run: str, host: str = "127.0.0.1", port: int = 8000, max_queue: int = 16, limits: Limits = Limits(),
          log=print) -> None:
    """Load the run and serve it until interrupted (uvicorn)."""
    import uvicorn

    loopback = host.strip("[]") in LOOPBACK_NAMES
    app = create_app(run, limits, max_queue, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    log(f"serve: run {app.state.server.card['run']} on http://{shown}:{port}/ (queue of {max_queue}; "
        f"{'loopback only' if loopback else 'reachable from the network: no authentication'})")
    uvicorn.run(app, host=host, port=port, log_level="info")
