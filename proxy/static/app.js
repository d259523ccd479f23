// FRVSR web page: pick a video (and the model, the output quality, the kind of input), send it to
// POST /autotable/predict (the same route as every client), show upload progress, then the wait (queue
// position and a countdown of the time left), then before and after on one clock: the 4x video drives and
// the input follows it frame for frame; step frames, look through a loupe on both sides, save a frame.
// Plain JavaScript, no build step, nothing from the internet.
"use strict";

const PREDICT = "/autotable/predict";
const HEALTH = "/health";
const QUEUE = "/autotable/queue";
const MODELS = "/autotable/models";
const REQUEST_ID_HEADER = "X-FRVSR-Request-Id";
const JSON_SLACK = 64 * 1024; // serving/contract.py JSON_SLACK_BYTES: the JSON around the base64 content

const $ = (id) => document.getElementById(id);
const state = {
  file: null, limits: null, busy: false, urls: [],
  frameDur: 1 / 25, frames: 0, shown: { after: null, before: null }, eta: null, lastFrame: null,
  pointer: null, // where the loupe looks: (u, v) in [0, 1] of the picture, or null
};
window.frvsr = state; // for the browser tests: the clock and the loupe's state

// ------------------------------------------------------------------ limits and service state

function mib(bytes) { return (bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0) + " MiB"; }

function maxFileBytes(limits) {
  // the body is base64 (4 characters per 3 bytes) inside a little JSON
  return Math.floor((limits.max_body_bytes - JSON_SLACK) * 3 / 4);
}

async function loadService() {
  try {
    const r = await fetch(HEALTH, { cache: "no-store" });
    const body = await r.json();
    const d = body.data || {};
    if (d.limits && d.limits.max_pixels) {
      state.limits = d.limits;
      const side = Math.floor(Math.sqrt(d.limits.max_pixels));
      $("limits").textContent = `Limits: frames up to ${d.limits.max_pixels.toLocaleString("en")} pixels (e.g. ${side}x${side}), ` +
        `up to ${d.limits.max_seconds} s and ${d.limits.max_frames} frames, files up to ${mib(maxFileBytes(d.limits))}. ` +
        `MP4 or WebM inputs also play here as "before".`;
    }
    if (d.models) fillModels(d.models);
    const q = d.queue || {};
    $("service").textContent = r.ok
      ? `Ready: model ${d.model && d.model.name ? d.model.name : ""}` + (q.waiting ? `, ${q.waiting} video(s) waiting` : "")
      : `Not ready yet: ${body.msg}`;
  } catch (e) {
    $("service").textContent = "The service does not answer; is client_infer.py running?";
  }
}

function fillModels(models) {
  // the picker lists what the server serves (GET /autotable/models, also in /health); the choice is kept
  const sel = $("model"), keep = sel.value;
  const names = models.map((m) => m.name).join(",");
  if (sel.dataset.names === names) return;
  sel.dataset.names = names;
  sel.innerHTML = "";
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.default ? "" : m.name;
    const spf = m.seconds_per_frame_176x144;
    o.textContent = `${m.name}${m.default ? " (default)" : ""}` + (spf ? `, ~${spf < 1 ? spf.toFixed(2) : spf.toFixed(1)} s/frame at 176x144` : "");
    o.disabled = m.ready === false;
    o.title = m.about || "";
    sel.appendChild(o);
  }
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  showAbout();
}

function showAbout() {
  // one line on the chosen model: what it is for, when to pick it (the server's "about")
  const o = $("model").selectedOptions[0];
  $("model-about").textContent = o ? o.title : "";
}
$("model").addEventListener("change", showAbout);

async function loadModels() {
  try {
    const d = (await (await fetch(MODELS, { cache: "no-store" })).json()).data;
    if (d && d.models) fillModels(d.models);
  } catch (e) { /* the picker keeps "the default" */ }
}

// ------------------------------------------------------------------ choosing a file

function choose(file) {
  if (!file) return;
  state.file = file;
  $("chosen").textContent = `${file.name}, ${mib(file.size)}`;
  $("upscale").disabled = state.busy;
  if (!state.busy) start();
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("upscale").addEventListener("click", () => { if (state.file && !state.busy) start(); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});

// ------------------------------------------------------------------ one job

function showError(title, detail) {
  $("error-title").textContent = title;
  $("error-detail").textContent = detail || "";
  $("error").hidden = false;
}

function plainError(code, msg, retryAfter) {
  // the envelope's message is precise; the title says it in plain words
  const m = msg || "";
  if (code === 503 && retryAfter) return [`The service is busy. Retry in ${retryAfter} s.`, m];
  if (code === 503) return ["The service is busy or restarting. Retry in a minute.", m];
  if (code === 413) return ["The file is too large for this service.", m];
  if (code === 415) return ["This file is not a video the server can read. Send an MP4, WebM, MOV, MKV or AVI file.", m];
  if (code === 422 && m.includes("max_seconds")) return ["The video is too long.", m];
  if (code === 422 && m.includes("max_frames")) return ["The video has too many frames.", m];
  if (code === 422 && m.includes("max_pixels")) return ["The video's frames are too large.", m];
  if (code === 422) return ["This video cannot be processed.", m];
  if (code === 400) return ["The request was not accepted.", m];
  if (code === 504) return ["The server took too long on this video.", m];
  if (code === 0) return ["The connection to the server was lost.", "Check that the service is running, then press Upscale."];
  return ["The server failed on this video.", m];
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result.slice(fr.result.indexOf(",") + 1)); // drop "data:...;base64,"
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(file);
  });
}

function outputFormat(file) {
  // ask for what a browser plays: WebM stays WebM (VP9), everything else comes back as MP4 (H.264)
  return /\.webm$/i.test(file.name) || file.type === "video/webm" ? "webm" : "mp4";
}

async function start() {
  const file = state.file;
  state.busy = true;
  $("upscale").disabled = true;
  $("error").hidden = true;
  $("result").hidden = true;
  if (state.limits && file.size > maxFileBytes(state.limits)) {
    showError("The file is too large for this service.", `${file.name} is ${mib(file.size)}; the limit is ${mib(maxFileBytes(state.limits))}. Send a shorter or smaller clip.`);
    return finish();
  }
  $("progress").hidden = false;
  $("phase").textContent = "Reading the file…";
  $("bar").value = 0;
  $("detail").textContent = "";
  let b64;
  try {
    b64 = await readBase64(file);
  } catch (e) {
    showError("The browser could not read this file.", String(e));
    return finish();
  }
  const id = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
  const opts = { format: outputFormat(file) };
  if ($("model").value) opts.model = $("model").value;
  if ($("crf").value) opts.crf = parseInt($("crf").value, 10);
  if ($("input_quality").value !== "auto") opts.input_quality = $("input_quality").value;
  state.eta = null;
  $("eta").textContent = "";
  // the content is spliced in as text: JSON.stringify of a 30 MB string would copy it again
  const body = `{"content": "${b64}", ` + JSON.stringify(opts).slice(1);
  const xhr = new XMLHttpRequest();
  let t0 = 0, timer = 0, poller = 0, where = "";
  xhr.open("POST", PREDICT);
  xhr.setRequestHeader("Content-Type", "application/json");
  xhr.setRequestHeader(REQUEST_ID_HEADER, id);
  xhr.responseType = "json";
  $("phase").textContent = "Uploading…";
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    $("bar").value = e.loaded / e.total;
    $("detail").textContent = `${Math.round(100 * e.loaded / e.total)} % of ${mib(e.total)}`;
  };
  xhr.upload.onload = () => {
    t0 = performance.now();
    $("bar").removeAttribute("value"); // indeterminate: processing
    const poll = async () => {
      try {
        const r = await fetch(`${QUEUE}?request=${encodeURIComponent(id)}`, { cache: "no-store" });
        const d = (await r.json()).data;
        if (d.estimated_time_left_s !== null && d.estimated_time_left_s !== undefined) {
          state.eta = { left: d.estimated_time_left_s, at: performance.now() };
        }
        if (d.state === "waiting" || d.state === "uploading") {
          where = `Waiting in the queue: position ${d.position + 1} (${d.position} ahead)` +
            (d.estimated_wait_s ? `, about ${Math.ceil(d.estimated_wait_s)} s` : "");
        } else if (d.state === "running") {
          where = "Your video is being super-resolved.";
        }
      } catch (e) { /* informational only */ }
    };
    const tick = () => {
      $("phase").textContent = `Processing… ${((performance.now() - t0) / 1000).toFixed(1)} s`;
      $("detail").textContent = where;
      if (state.eta) {
        const left = state.eta.left - (performance.now() - state.eta.at) / 1000;
        $("eta").textContent = left >= 1 ? `About ${Math.ceil(left)} s left` : "Almost done…";
      } else {
        $("eta").textContent = "Estimating the time left…";
      }
    };
    poll();
    tick();
    timer = setInterval(tick, 100);
    poller = setInterval(poll, 1000);
  };
  xhr.onloadend = () => {
    clearInterval(timer);
    clearInterval(poller);
    $("progress").hidden = true;
    const res = xhr.response;
    if (xhr.status === 200 && res && res.code === 200) {
      showResult(file, res.data, xhr).catch((e) => showError("The result could not be shown.", String(e))).finally(finish);
      return;
    }
    const [title, detail] = plainError(xhr.status, res && res.msg, xhr.getResponseHeader("Retry-After"));
    showError(title, detail);
    finish();
  };
  xhr.send(body);
}

function finish() {
  state.busy = false;
  $("upscale").disabled = !state.file;
}

// ------------------------------------------------------------------ the result

function parseTiming(text) {
  const out = {};
  for (const part of (text || "").split(";")) {
    const [k, v] = part.split("=");
    if (v !== undefined && !isNaN(parseFloat(v))) out[k.trim()] = parseFloat(v);
  }
  return out;
}

function loaded(video) {
  return new Promise((resolve, reject) => {
    if (video.readyState >= 1) return resolve();
    video.onloadedmetadata = () => resolve();
    video.onerror = () => reject(video.error);
  });
}

async function showResult(file, data, xhr) {
  for (const u of state.urls) URL.revokeObjectURL(u);
  const family = xhr.getResponseHeader("X-FRVSR-Format") || "mp4";
  const timing = parseTiming(xhr.getResponseHeader("X-FRVSR-Timing"));
  const modelName = (xhr.getResponseHeader("X-FRVSR-Model") || "FRVSR").split("/")[0];
  const variant = (xhr.getResponseHeader("X-FRVSR-Input") || "").split(" ")[0];
  const blob = await (await fetch(`data:video/${family};base64,${data.content}`)).blob();
  const outUrl = URL.createObjectURL(blob);
  state.outputBytes = blob.size;
  const inUrl = URL.createObjectURL(file);
  state.urls = [outUrl, inUrl];
  const before = $("before"), after = $("after");
  after.src = outUrl;
  before.src = inUrl;
  const a = $("download");
  a.href = outUrl;
  a.download = file.name.replace(/\.[^.]*$/, "") + "_x4." + family;
  $("result").hidden = false;
  let note = "";
  try {
    await loaded(after);
  } catch (e) {
    note = "The browser cannot play the 4x file (full-colour H.264 or an unusual codec); Download it and play it in VLC or FFmpeg.";
  }
  try {
    await loaded(before);
  } catch (e) {
    note = note || `The browser cannot play the original (${file.name}); only the 4x result plays. MP4 (H.264) and WebM inputs play here.`;
  }
  if (after.videoWidth) $("stage").style.setProperty("--aspect", after.videoWidth / after.videoHeight);
  const frames = timing.frames;
  const dur = after.duration;
  const fps = frames && isFinite(dur) && dur > 0 ? (frames / dur).toFixed(2).replace(/\.?0+$/, "") : "?";
  state.frames = frames || 0;
  state.frameDur = frames && isFinite(dur) && dur > 0 ? dur / frames : 1 / 25;
  state.shown = { after: null, before: null };
  $("before-label").textContent = `Input, scaled by the browser (${before.videoWidth || "?"}x${before.videoHeight || "?"})`;
  $("after-label").textContent = `${modelName} 4×` + (variant ? ` (${variant} input)` : "") + ` (${after.videoWidth}x${after.videoHeight})`;
  state.baseName = file.name.replace(/\.[^.]*$/, "");
  $("info").textContent = `Output ${after.videoWidth}x${after.videoHeight}` + (frames ? `, ${frames} frames` : "") + `, ${fps} fps` +
    `, ${mib(blob.size)} · server time ${data.elapsed_time.toFixed(2)} s` + (timing.model !== undefined ? ` (model ${timing.model.toFixed(2)} s)` : "");
  $("note").textContent = note;
  after.play().catch(() => {}); // the input follows it frame by frame (one clock)
}

// ------------------------------------------------------------------ one clock for both videos
// The 4x video is the only clock: it plays; the input never plays by itself. Each frame the 4x video
// presents (requestVideoFrameCallback: the frame's own media time), the paused input is put on that same
// frame (the middle of its interval), so the two cannot drift; a step or a seek moves the 4x video and the
// input follows it the same way.

function watchFrames(video, key) {
  if (!video.requestVideoFrameCallback) return;
  const onFrame = (now, meta) => {
    state.shown[key] = meta.mediaTime;
    if (key === "after") follow(meta.mediaTime);
    drawLoupes();
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function follow(mediaTime) {
  const before = $("before");
  if (before.readyState < 1) return;
  if (!before.paused) before.pause();
  const target = mediaTime + state.frameDur / 2;
  // a seek still running: the next frame's callback puts it right (the input is small, seeks are quick)
  if (!before.seeking && Math.abs(before.currentTime - target) > state.frameDur / 4) before.currentTime = target;
}
watchFrames($("after"), "after");
watchFrames($("before"), "before");

function frameIndex() {
  const t = state.shown.after !== null ? state.shown.after : $("after").currentTime;
  return Math.max(0, Math.round(t / state.frameDur));
}

function showFrame(index) {
  // paused on frame ``index`` (its middle: the frame shown is the same in both, whatever the rounding)
  const after = $("after");
  const last = state.frames ? state.frames - 1 : Math.floor(after.duration / state.frameDur) - 1;
  const i = Math.min(Math.max(0, index), Math.max(0, last));
  after.pause();
  const t = (i + 0.5) * state.frameDur;
  after.currentTime = t; // the input follows when the 4x frame is presented
}

function step(delta) { if ($("after").readyState >= 1) showFrame(frameIndex() + delta); }

function playPause() {
  const after = $("after");
  if (after.paused) after.play().catch(() => {}); else after.pause();
}

function ui() {
  const after = $("after");
  if (after.readyState >= 1 && isFinite(after.duration)) {
    if (!seeking) $("seek").value = Math.round(1000 * after.currentTime / after.duration);
    const frame = state.frames ? ` · frame ${Math.min(frameIndex() + 1, state.frames)} / ${state.frames}` : "";
    $("clock").textContent = `${after.currentTime.toFixed(2)} / ${after.duration.toFixed(2)} s${frame}`;
    $("play").textContent = after.paused ? "Play" : "Pause";
  }
  requestAnimationFrame(ui);
}
let seeking = false;
requestAnimationFrame(ui);

$("play").addEventListener("click", playPause);
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
document.addEventListener("keydown", (e) => {
  if ($("result").hidden || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  if (e.key === ",") { step(-1); e.preventDefault(); }
  if (e.key === ".") { step(1); e.preventDefault(); }
  if (e.key === " ") { playPause(); e.preventDefault(); }
});
$("seek").addEventListener("input", () => {
  seeking = true;
  const after = $("after");
  if (isFinite(after.duration)) after.currentTime = $("seek").value / 1000 * after.duration;
});
$("seek").addEventListener("change", () => { seeking = false; });
$("mode-side").addEventListener("click", () => setMode("side"));
$("mode-wipe").addEventListener("click", () => setMode("wipe"));
$("wipe").addEventListener("input", () => $("stage").style.setProperty("--wipe", $("wipe").value + "%"));

// ------------------------------------------------------------------ the loupe
// Nearest-neighbour pixels around the pointer, at the same place in both pictures: the 4x frame at the
// chosen zoom, the input at 4x that (so both show the same part of the scene).

function pictureRect(video) {
  // the picture inside the element (object-fit: contain may leave bars)
  const r = video.getBoundingClientRect();
  const s = Math.min(r.width / video.videoWidth, r.height / video.videoHeight);
  const w = video.videoWidth * s, h = video.videoHeight * s;
  return { left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h };
}

function drawLoupe(video, canvas, zoom) {
  const box = canvas.parentElement.getBoundingClientRect(), pic = pictureRect(video);
  const size = canvas.width, span = Math.max(1, Math.round(size / zoom)); // source pixels across
  const cx = Math.round(state.pointer.u * video.videoWidth), cy = Math.round(state.pointer.v * video.videoHeight);
  const sx = Math.min(Math.max(0, cx - Math.floor(span / 2)), Math.max(0, video.videoWidth - span));
  const sy = Math.min(Math.max(0, cy - Math.floor(span / 2)), Math.max(0, video.videoHeight - span));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, size, size);
  ctx.drawImage(video, sx, sy, span, span, 0, 0, span * zoom, span * zoom);
  canvas.style.left = `${pic.left - box.left + state.pointer.u * pic.width - size / 2}px`;
  canvas.style.top = `${pic.top - box.top + state.pointer.v * pic.height - size / 2}px`;
  canvas.hidden = false;
}

function drawLoupes() {
  const zoom = parseInt($("zoom").value, 10);
  const after = $("after"), before = $("before");
  const on = zoom > 0 && state.pointer && after.videoWidth && $("stage").className === "side";
  $("loupe-after").hidden = $("loupe-before").hidden = !on;
  if (!on) return;
  drawLoupe(after, $("loupe-after"), zoom);
  if (before.videoWidth) drawLoupe(before, $("loupe-before"), zoom * after.videoWidth / before.videoWidth);
}

function pointAt(video, e) {
  const pic = pictureRect(video);
  const u = (e.clientX - pic.left) / pic.width, v = (e.clientY - pic.top) / pic.height;
  state.pointer = u >= 0 && u <= 1 && v >= 0 && v <= 1 ? { u, v } : null;
  drawLoupes();
}
for (const id of ["before", "after"]) {
  $(id).addEventListener("pointermove", (e) => pointAt($(id), e));
  $(id).addEventListener("pointerleave", () => { state.pointer = null; drawLoupes(); });
}
$("zoom").addEventListener("change", drawLoupes);

// ------------------------------------------------------------------ save this frame

function saveFrame() {
  const after = $("after");
  if (!after.videoWidth) return Promise.resolve(null);
  const c = document.createElement("canvas");
  c.width = after.videoWidth;
  c.height = after.videoHeight;
  c.getContext("2d").drawImage(after, 0, 0);
  return new Promise((resolve) => c.toBlob((blob) => {
    const frame = frameIndex() + 1;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${state.baseName || "frame"}_x4_frame${frame}.png`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    state.lastFrame = { frame, width: c.width, height: c.height, bytes: blob.size, name: a.download };
    resolve(state.lastFrame);
  }, "image/png"));
}
$("save-frame").addEventListener("click", saveFrame);

function setMode(mode) {
  $("stage").className = mode;
  $("mode-side").classList.toggle("on", mode === "side");
  $("mode-wipe").classList.toggle("on", mode === "wipe");
}

loadService();
loadModels();
setInterval(() => { if (!state.busy) loadService(); }, 10000);
