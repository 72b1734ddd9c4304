"use strict";
// trimdm's page. Every form posts a multipart request to /api/generate/stream and draws the server-sent
// events as they arrive: the place in the queue, a picture of the canvas after each decoding step, and
// last the outputs, each downloadable with its JSON sidecar. Form defaults come from the run's card
// (GET /api/run). Plain JavaScript, no build step, nothing loaded from elsewhere.

const $ = (id) => document.getElementById(id);
let card = null;               // the run's card
const chosen = {};             // form id -> {blob, name}: the input file of i2t, s2t and image infill
const running = {};            // panel -> AbortController of its request in flight
const infill = {image: null, rect: null, span: null};

// -- small helpers ------------------------------------------------------------------------------------
async function getJSON(url) {
  const resp = await fetch(url);
  const body = await resp.json().catch(() => ({error: resp.statusText}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function blobOf(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], {type});
}

function element(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  el.append(...children);
  return el;
}

function download(label, blob, filename) {
  return element("a", {href: URL.createObjectURL(blob), download: filename, text: label});
}

// -- the run ------------------------------------------------------------------------------------------
function describeRun() {
  const c = card.config;
  const params = (c.params / 1e6).toFixed(1);
  $("run-summary").textContent =
    `run ${card.run} (${card.checkpoint}): ${c.recipe} on ${c.dataset}, ${params}M parameters, ` +
    `${c.n_layers} layers of ${c.d_model}, rows of ${c.seq_len} tokens, on ${c.device}`;
  $("run-card").textContent = JSON.stringify(card, null, 2);
  for (const tab of document.querySelectorAll("#tabs button[data-needs]")) {
    tab.hidden = !card[tab.dataset.needs];
  }
}

async function updateQueue() {
  try {
    const h = await getJSON("/api/health");
    $("queue-status").textContent = `queue: ${h.queued} waiting, ${h.running ? "one running" : "idle"}`;
  } catch (e) {
    $("queue-status").textContent = `server unreachable (${e.message})`;
  }
}

function fillDefaults(form) {
  const row = card.sampling[form.dataset.target];
  for (const name of ["steps", "guidance", "temperature"]) {
    const field = form.elements[name];
    if (field && field.value === "") field.value = row[name];
  }
  if (form.elements.gen_len && form.elements.gen_len.value === "") form.elements.gen_len.value = card.sampling.gen_len;
}

function setupTabs() {
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll("#tabs button")) t.classList.toggle("active", t === tab);
      for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== `panel-${tab.dataset.panel}`;
    });
  }
}

// -- a request ----------------------------------------------------------------------------------------
function requestOf(form, extra = {}) {
  const f = form.elements, target = form.dataset.target;
  const data = new FormData();
  data.append("task", extra.task || form.dataset.task);
  for (const name of ["prompt", "n", "seed"]) {
    if (f[name] && f[name].value !== "") data.append(name, f[name].value);
  }
  const settings = {[target]: {}};
  for (const name of ["steps", "guidance", "temperature"]) {
    if (f[name] && f[name].value !== "") settings[target][name] = Number(f[name].value);
  }
  if (f.gen_len && f.gen_len.value !== "") settings.gen_len = Number(f.gen_len.value);
  data.append("settings", JSON.stringify(settings));
  if (extra.span) data.append("span", extra.span);
  const input = chosen[form.id];
  if (input) data.append("input", input.blob, input.name);
  return data;
}

async function readEvents(body, onEvent) {
  // server-sent events: blocks separated by a blank line, each with `event:` and `data:` lines
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

function liveView(panel) {
  const status = element("p", {class: "status", text: "sending…"});
  const progress = element("progress", {max: 1, value: 0});
  const stepText = element("span", {class: "hint"});
  const canvas = element("div", {class: "canvas"});
  const stop = element("button", {type: "button", text: "Cancel"});
  $(`${panel}-live`).replaceChildren(element("div", {class: "row"}, status, stop), element("div", {class: "row"},
    progress, stepText), canvas);
  return {status, progress, stepText, canvas, stop};
}

async function submit(form, extra = {}) {
  const panel = form.closest(".panel").id.replace("panel-", "");
  if (running[panel]) running[panel].abort();
  const control = running[panel] = new AbortController();
  const view = liveView(panel);
  view.stop.addEventListener("click", () => control.abort());
  const outputs = $(`${panel}-outputs`);
  try {
    const resp = await fetch("/api/generate/stream", {method: "POST", body: requestOf(form, extra),
                                                       signal: control.signal});
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({error: resp.statusText}));
      const retry = resp.headers.get("Retry-After");
      view.status.textContent = `refused (${resp.status}): ${err.error}` + (retry ? ` (retry in ${retry} s)` : "");
      view.status.classList.add("error");
      return;
    }
    await readEvents(resp.body, (event, data) => onEvent(event, data, view, outputs));
  } catch (e) {
    view.status.textContent = e.name === "AbortError" ? "cancelled" : `failed: ${e.message}`;
  } finally {
    view.stop.disabled = true;
    if (running[panel] === control) delete running[panel];
    updateQueue();
  }
}

function onEvent(event, data, view, outputs) {
  if (event === "queued") {
    view.status.textContent = data.ahead ? `waiting: position ${data.position} in the queue, ${data.ahead} ahead`
                                         : "next in the queue";
  } else if (event === "started") {
    view.status.textContent = "decoding…";
  } else if (event === "step") {
    view.progress.value = data.step / data.steps;
    const stage = data.stages > 1 ? ` · level ${data.stage + 1} of ${data.stages}` : "";
    view.stepText.textContent = `canvas ${data.pass}${stage} · step ${data.step} of ${data.steps}`;
    drawCanvas(view.canvas, data);
  } else if (event === "done") {
    view.status.textContent = `done in ${data.seconds} s`;
    view.progress.value = 1;
    showOutputs(outputs, data);
  } else if (event === "error" || event === "cancelled") {
    view.status.textContent = `error: ${data.error}`;
    view.status.classList.add("error");
  }
}

function drawCanvas(box, step) {
  // one cell per row of the canvas; a step of a later batch fills the cells after the earlier ones
  while (box.children.length < step.rows) box.append(element("div", {class: "cell"}));
  const items = step.images || step.texts || step.revealed;
  items.forEach((item, i) => {
    const cell = box.children[step.first_row + i];
    if (step.images) {
      const img = cell.querySelector("img") || cell.appendChild(element("img", {class: "pixelated", alt: "canvas"}));
      img.src = `data:image/png;base64,${item}`;
    } else if (step.texts) {
      cell.replaceChildren(element("pre", {text: item}));
    } else {
      cell.replaceChildren(element("meter", {value: item, max: 1}), ` ${Math.round(item * 100)}% revealed`);
    }
  });
}

// -- outputs ------------------------------------------------------------------------------------------
function showOutputs(box, result) {
  box.replaceChildren();
  const stem = `${result.task}-seed${result.seed}`;
  for (const out of result.outputs) {
    const blob = blobOf(out.base64, out.media_type);
    const sidecar = new Blob([JSON.stringify(out.sidecar, null, 2) + "\n"], {type: "application/json"});
    const base = out.name.replace(/\.[a-z]+$/, "");
    const links = element("div", {class: "links"}, download(out.name, blob, `${stem}-${out.name}`), " · ",
                          download("sidecar", sidecar, `${stem}-${base}.json`));
    let media;
    if (out.media_type === "image/png") {
      media = element("img", {class: "output pixelated", src: URL.createObjectURL(blob), alt: out.name});
      links.append(" · ", element("button", {type: "button", text: "→ describe", onclick: () => useInput("i2t", blob, out.name)}),
                   " ", element("button", {type: "button", text: "→ infill", onclick: () => useInput("image-infill", blob, out.name)}));
    } else if (out.media_type.startsWith("audio/")) {
      media = element("audio", {class: "output", controls: "", src: URL.createObjectURL(blob)});
      links.append(" · ", element("button", {type: "button", text: "→ transcribe", onclick: () => useInput("s2t", blob, out.name)}));
    } else {
      media = element("pre", {class: "output output-text", text: out.text});
    }
    box.append(element("figure", {}, media, element("figcaption", {}, links)));
  }
  if (result.grid) {
    box.append(element("p", {}, download("grid.png", blobOf(result.grid.base64, "image/png"), `${stem}-grid.png`)));
  }
}

// -- inputs: files, examples, outputs sent on --------------------------------------------------------
const INPUT_FORMS = {"i2t": "i2t-form", "s2t": "s2t-form", "image-infill": "image-infill-form"};

function useInput(panel, blob, name, note = "") {
  const form = INPUT_FORMS[panel];
  chosen[form] = {blob, name};
  const url = URL.createObjectURL(blob);
  if (panel === "image-infill") {
    loadInfillImage(url);
  } else {
    const media = blob.type.startsWith("audio/") ? element("audio", {controls: "", src: url})
                                                 : element("img", {class: "pixelated", src: url, alt: name});
    $(`${panel}-input`).replaceChildren(media, element("span", {class: "hint", text: ` ${name} ${note}`}));
  }
  document.querySelector(`#tabs button[data-panel="${panel}"]`).click();
}

async function useExample(panel, modality) {
  const index = Math.floor(Math.random() * 1000);
  try {
    const ex = await getJSON(`/api/examples/${modality}?index=${index}`);
    useInput(panel, blobOf(ex.base64, ex.media_type), ex.name, ex.text ? `(reference: “${ex.text}”)` : "");
  } catch (e) {
    const where = panel === "image-infill" ? "image-infill-live" : `${panel}-input`;
    $(where).replaceChildren(element("p", {class: "hint", text: `${e.message}. Any output of ` +
      (modality === "image" ? "Text → Image" : "Text → Speech") + " can be sent here with its → button."}));
  }
}

function setupInputs() {
  for (const [panel, form] of Object.entries(INPUT_FORMS)) {
    const file = $(form).querySelector("input[type=file]");
    file.addEventListener("change", () => {
      if (file.files.length) useInput(panel, file.files[0], file.files[0].name);
    });
  }
  $("i2t-example").addEventListener("click", () => useExample("i2t", "image"));
  $("s2t-example").addEventListener("click", () => useExample("s2t", "audio"));
  $("infill-example").addEventListener("click", () => useExample("image-infill", "image"));
}

// -- text infill: the selected characters of the prompt ------------------------------------------------
function setupTextInfill() {
  const prompt = $("text-prompt"), go = $("text-infill-go");
  const update = () => {
    // the server counts characters (code points), JavaScript UTF-16 units
    const a = [...prompt.value.slice(0, prompt.selectionStart)].length;
    const b = [...prompt.value.slice(0, prompt.selectionEnd)].length;
    go.disabled = b <= a;
    go.dataset.span = `${a}:${b}`;
    $("text-selection").textContent = b > a ? `infill characters ${a}:${b}: “${prompt.value.slice(prompt.selectionStart, prompt.selectionEnd)}”` : "no selection";
  };
  for (const ev of ["select", "keyup", "mouseup"]) prompt.addEventListener(ev, update);
  go.addEventListener("click", () => submit($("text-form"), {task: "infill", span: go.dataset.span}));
}

// -- image infill: a rectangle dragged over the image, mapped to the token grid ---------------------------
function loadInfillImage(url) {
  const img = new Image();
  img.onload = () => { infill.image = img; infill.rect = null; infill.span = null; drawInfill(); };
  img.src = url;
}

function drawInfill() {
  const canvas = $("infill-canvas"), ctx = canvas.getContext("2d"), side = canvas.width;
  const grid = card.image.grid, cell = side / grid;
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, side, side);
  if (infill.image) {
    // as the server fits it: the shorter side to the square and the centre kept (crop), or the longer (pad)
    const {width: w, height: h} = infill.image;
    const s = card.image.fit === "pad" ? Math.max(w, h) : Math.min(w, h);
    ctx.drawImage(infill.image, (w - s) / 2, (h - s) / 2, s, s, 0, 0, side, side);
  }
  ctx.strokeStyle = "rgba(0, 0, 0, 0.15)";
  for (let i = 1; i < grid; i++) {
    ctx.beginPath(); ctx.moveTo(i * cell, 0); ctx.lineTo(i * cell, side); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, i * cell); ctx.lineTo(side, i * cell); ctx.stroke();
  }
  const cells = rectCells();
  if (cells) {
    ctx.fillStyle = "rgba(255, 0, 120, 0.35)";
    ctx.fillRect(cells.c0 * cell, cells.r0 * cell, (cells.c1 - cells.c0 + 1) * cell, (cells.r1 - cells.r0 + 1) * cell);
  }
}

function rectCells() {
  // the token cells a dragged rectangle touches, and the span naming them (one raster range per grid row)
  const r = infill.rect;
  if (!r) return null;
  const side = $("infill-canvas").width, grid = card.image.grid, cell = side / grid;
  const clamp = (v) => Math.min(grid - 1, Math.max(0, Math.floor(v / cell)));
  const c0 = clamp(Math.min(r.x0, r.x1)), c1 = clamp(Math.max(r.x0, r.x1) - 1e-6);
  const r0 = clamp(Math.min(r.y0, r.y1)), r1 = clamp(Math.max(r.y0, r.y1) - 1e-6);
  const ranges = [];
  for (let row = r0; row <= r1; row++) ranges.push(`${row * grid + c0}:${row * grid + c1 + 1}`);
  return {c0, c1, r0, r1, span: ranges.join(",")};
}

function setupInfillCanvas() {
  const canvas = $("infill-canvas");
  const at = (ev) => {
    const box = canvas.getBoundingClientRect();
    return [(ev.clientX - box.left) * canvas.width / box.width, (ev.clientY - box.top) * canvas.height / box.height];
  };
  let dragging = false;
  canvas.addEventListener("pointerdown", (ev) => {
    if (!infill.image) return;
    const [x, y] = at(ev);
    infill.rect = {x0: x, y0: y, x1: x + 1, y1: y + 1};
    dragging = true;
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!dragging) return;
    [infill.rect.x1, infill.rect.y1] = at(ev);
    drawInfill();
  });
  canvas.addEventListener("pointerup", () => {
    dragging = false;
    const cells = rectCells();
    infill.span = cells && cells.span;
    $("infill-span").textContent = cells ? `image tokens ${cells.span}` : "no rectangle yet";
    $("infill-go").disabled = !cells;
    drawInfill();
  });
  $("image-infill-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (infill.span) submit($("image-infill-form"), {span: infill.span});
  }, true);
}

// -- start ---------------------------------------------------------------------------------------------
async function init() {
  setupTabs();
  try {
    card = await getJSON("/api/run");
  } catch (e) {
    $("run-summary").textContent = `cannot read the run: ${e.message}`;
    return;
  }
  describeRun();
  for (const form of document.querySelectorAll("form.task")) {
    fillDefaults(form);
    if (form.id !== "image-infill-form") {
      form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(form); });
    }
  }
  setupInputs();
  setupTextInfill();
  if (card.image) { setupInfillCanvas(); drawInfill(); }
  updateQueue();
}

document.addEventListener("DOMContentLoaded", init);
