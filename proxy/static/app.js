// FRVSR web page: pick a video, send it to POST /autotable/predict (the same route as every client),
// show upload progress, then the wait (queue position, elapsed time), then before and after in sync.
// Plain JavaScript, no build step, nothing from the internet.
"use strict";

const PREDICT = "/autotable/predict";
const HEALTH = "/health";
const QUEUE = "/autotable/queue";
const REQUEST_ID_HEADER = "X-FRVSR-Request-Id";
const JSON_SLACK = 64 * 1024; // serving/contract.py JSON_SLACK_BYTES: the JSON around the base64 content

const $ = (id) => document.getElementById(id);
const state = { file: null, limits: null, busy: false, urls: [] };

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
    const q = d.queue || {};
    $("service").textContent = r.ok
      ? `Ready: model ${d.model && d.model.name ? d.model.name : ""}` + (q.waiting ? `, ${q.waiting} video(s) waiting` : "")
      : `Not ready yet: ${body.msg}`;
  } catch (e) {
    $("service").textContent = "The service does not answer; is client_infer.py running?";
  }
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
  const body = `{"content": "${b64}", "format": "${outputFormat(file)}"}`;
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
  const blob = await (await fetch(`data:video/${family};base64,${data.content}`)).blob();
  const outUrl = URL.createObjectURL(blob);
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
  $("info").textContent = `Output ${after.videoWidth}x${after.videoHeight}` + (frames ? `, ${frames} frames` : "") + `, ${fps} fps` +
    `, ${mib(blob.size)} · server time ${data.elapsed_time.toFixed(2)} s` + (timing.model !== undefined ? ` (model ${timing.model.toFixed(2)} s)` : "");
  $("note").textContent = note;
  after.play().catch(() => {});
  before.play().catch(() => {});
}

// keep the input in step with the output (the output drives)
function sync() {
  const before = $("before"), after = $("after");
  if (after.readyState >= 1 && isFinite(after.duration)) {
    if (before.readyState >= 1 && Math.abs(before.currentTime - after.currentTime) > 0.08) before.currentTime = after.currentTime;
    if (!before.paused !== !after.paused) after.paused ? before.pause() : before.play().catch(() => {});
    if (!seeking) $("seek").value = Math.round(1000 * after.currentTime / after.duration);
    $("clock").textContent = `${after.currentTime.toFixed(1)} / ${after.duration.toFixed(1)} s`;
    $("play").textContent = after.paused ? "Play" : "Pause";
  }
  requestAnimationFrame(sync);
}
let seeking = false;
requestAnimationFrame(sync);

$("play").addEventListener("click", () => {
  const after = $("after");
  if (after.paused) { after.play(); $("before").play().catch(() => {}); } else { after.pause(); $("before").pause(); }
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

function setMode(mode) {
  $("stage").className = mode;
  $("mode-side").classList.toggle("on", mode === "side");
  $("mode-wipe").classList.toggle("on", mode === "wipe");
}

loadService();
setInterval(() => { if (!state.busy) loadService(); }, 10000);
