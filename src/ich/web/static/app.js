// ich viewer: worklist + study viewer on the JSON API. Plain JS, no build step, no CDN.
"use strict";
// Labels come from the loaded run (/api/info) and from each result's own keys: the six RSNA
// labels, a subset, or the run's own (e.g. "hemorrhage"). Short names and colours exist for
// the RSNA labels; any other label is shown by its name in a colour from PALETTE.
const SHORT = {any: "ANY", epidural: "EDH", intraparenchymal: "IPH", intraventricular: "IVH",
  subarachnoid: "SAH", subdural: "SDH"};
const PALETTE = ["#ffb347", "#4fd1c5", "#ff6b6b", "#c38bff", "#5aa9ff", "#9be564", "#f78fb3"];
const $ = (id) => document.getElementById(id);
const LIST_POLL_MS = 3000, STUDY_POLL_MS = 4000;
const S = {study: null, series: 0, slices: [], index: 0, window: "brain", poll: null, listPoll: null,
  labels: [], thresholds: {}};

function esc(t) { return String(t ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }
function pct(p) { return p == null ? "–" : (100 * p).toFixed(p >= 0.995 || p < 0.005 ? 0 : 1) + "%"; }
function colour(l) {
  const own = getComputedStyle(document.documentElement).getPropertyValue(`--c-${l}`).trim();
  if (own) return own;
  const k = Math.max(0, S.labels.indexOf(l));
  return PALETTE[k % PALETTE.length];
}
function short(l) { return SHORT[l] || l; }
// The label that ranks studies and slices: "any", else the largest probability of the run's labels.
function score(probs) {
  if (!probs) return null;
  if (probs.any != null) return probs.any;
  const v = Object.values(probs);
  return v.length ? Math.max(...v) : null;
}
function scoreName(labels) {
  return labels.includes("any") ? "any" : labels.length === 1 ? labels[0] : "max";
}
function threshold(l) { return S.thresholds[l] ?? 0.5; }
// The threshold of the ranking number: that of "any" or of a one-label run's label, else 0.5.
function scoreThreshold() { const n = scoreName(S.labels); return n === "max" ? 0.5 : threshold(n); }
function labelsOf(probs) { return probs ? Object.keys(probs) : S.labels; }
function setLabelOptions(sel, options) {
  const keep = sel.value;
  sel.innerHTML = options.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join("");
  if (options.some(([v]) => v === keep)) sel.value = keep;
}
function applyLabels(info) {
  // Worklist filter, ranking column and heatmap picker follow the loaded run's labels.
  S.labels = info.labels || []; S.thresholds = info.thresholds || {};
  const findings = S.labels.filter((l) => l !== "any").map((l) => [l, l[0].toUpperCase() + l.slice(1)]);
  setLabelOptions($("flag-filter"), [["", "All findings"],
    ...(S.labels.includes("any") ? [["any", "Any hemorrhage"]] : []), ...findings]);
  setLabelOptions($("heat-label"), S.labels.map((l) => [l, l]));
  $("score-head").textContent = `P(${scoreName(S.labels)})`;
  // Rows drawn before the labels and thresholds arrived are drawn again with them.
  S.listKey = null;
  if (location.pathname === "/") loadWorklist();
}

async function api(path, opts = {}) {
  const r = await fetch(path, {credentials: "same-origin", ...opts});
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw Object.assign(new Error(body?.detail || `${r.status} ${r.statusText}`), {body});
  return body;
}

// ---- header: notice + provenance on every page ----------------------------------------
async function loadInfo() {
  try {
    const info = await api("/api/info");
    applyLabels(info);
    const p = info.provenance || {};
    const text = Object.entries(p).map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`).join(" · ");
    $("provenance").textContent = "Model — " + (text || "unknown provenance");
    $("foot-provenance").textContent = p.training_data ? `Trained on: ${p.training_data}` : text;
    $("notice").textContent = info.notice; $("foot-notice").textContent = info.notice;
    if (!info.model_ready) setTimeout(loadInfo, 3000);
  } catch (e) { $("provenance").textContent = "Model — " + e.message; }
}

// ---- upload: buttons, folder, drag-and-drop (files, folders, .zip) ---------------------
async function upload(files) {
  if (!files.length) return;
  const fd = new FormData();
  for (const f of files) fd.append("files", f, f.webkitRelativePath || f.relPath || f.name);
  $("upload-status").hidden = false; $("upload-errors").innerHTML = "";
  $("upload-message").textContent = `Uploading ${files.length} file(s)…`;
  try {
    const r = await api("/api/studies", {method: "POST", body: fd});
    const again = r.existing.length ? ` (${r.existing.length} already loaded: shown, not re-read)` : "";
    $("upload-message").textContent = `Received ${r.files} file(s) → ${r.ids.length} study(ies)${again}; ` +
      (r.errors.length ? `${r.errors.length} file(s) could not be used:` : "all files readable.");
    showFileProblems(r);
    if (!r.errors.length && !r.skipped.length) setTimeout(() => { $("upload-status").hidden = true; }, 6000);
    route();
  } catch (e) {
    $("upload-message").textContent = "Upload failed: " + e.message;
    if (e.body) showFileProblems(e.body);
  }
}

function showFileProblems(r) {
  // Every file that was not used, and every .zip member that was not read, with the reason.
  const item = (e, what) => `<li><b>${esc(e.file)}</b>: ${what}${esc(e.reason)}</li>`;
  $("upload-errors").innerHTML = (r.errors || []).map((e) => item(e, "")).join("") +
    (r.skipped || []).map((e) => item(e, "skipped — ")).join("");
}

async function entryFiles(entry, prefix = "") {
  if (entry.isFile) {
    return [await new Promise((res, rej) => entry.file((f) => { f.relPath = prefix + f.name; res(f); }, rej))];
  }
  const reader = entry.createReader(); let out = [];
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const e of batch) out = out.concat(await entryFiles(e, prefix + entry.name + "/"));
  }
  return out;
}

function setupUpload() {
  $("upload-input").onchange = (e) => { upload([...e.target.files]); e.target.value = ""; };
  $("folder-input").onchange = (e) => { upload([...e.target.files]); e.target.value = ""; };
  $("upload-dismiss").onclick = () => { $("upload-status").hidden = true; };
  let depth = 0;
  window.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop-overlay").hidden = false; });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop-overlay").hidden = true; } });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", async (e) => {
    e.preventDefault(); depth = 0; $("drop-overlay").hidden = true;
    const items = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry());
    let files = [];
    if (items.length && items.every(Boolean)) for (const en of items) files = files.concat(await entryFiles(en));
    else files = [...e.dataTransfer.files];
    upload(files);
  });
}

// ---- worklist ---------------------------------------------------------------------------
// A study outside the model's training data: say so plainly instead of showing an alarm.
function outOfDomain(s) {
  return `<span class="chip ood" title="${esc(s.domain_note || "")}">outside training data</span>` +
    `<span class="muted mono"> ${pct(s.score)} unreliable</span>`;
}

function pbar(p) {
  if (p == null) return '<span class="muted">–</span>';
  const t = scoreThreshold(), cls = p >= t ? "hi" : p >= 0.4 * t ? "mid" : "";
  return `<div class="pbar"><div class="bar"><i class="${cls}" style="width:${(100 * p).toFixed(1)}%"></i></div>` +
    `<span class="mono">${pct(p)}</span></div>`;
}

async function loadWorklist() {
  const q = new URLSearchParams({q: $("search").value, status: $("status-filter").value, flag: $("flag-filter").value});
  let rows;
  try { rows = await api("/api/studies?" + q); } catch (e) { $("worklist-count").textContent = e.message; return; }
  const key = q.toString() + JSON.stringify(rows);
  if (key === S.listKey && location.pathname === "/") { scheduleWorklist(rows); return; }  // unchanged: keep the DOM
  S.listKey = key;
  $("worklist-body").innerHTML = rows.map((s) => `<tr data-id="${esc(s.id)}" data-any="${s.score ?? ""}">
    <td>${s.in_domain === false ? outOfDomain(s) : pbar(s.score)}</td>
    <td>${s.in_domain === false ? "" : s.flags.map((f) => `<span class="chip" style="color:${colour(f)}" title="${esc(f)}">${esc(short(f))}</span>`).join("") || '<span class="muted">—</span>'}</td>
    <td>${esc(s.patient_id) || '<span class="muted">—</span>'}</td><td class="mono">${s.n_slices}</td>
    <td class="mono">${new Date(s.received * 1000).toLocaleString()}${s.source && s.source !== "upload" ? `<div class="muted" title="received over DICOM">${esc(s.source)}</div>` : ""}</td>
    <td><span class="badge ${s.status}">${s.status}${s.status === "processing" ? " " + pct(s.progress) : ""}</span>
      ${s.n_errors ? `<span class="muted" title="files that could not be used">${s.n_errors} err</span>` : ""}</td>
    <td class="mono muted">${esc(s.id)}</td></tr>`).join("");
  $("worklist-empty").hidden = rows.length > 0;
  $("worklist-count").textContent = `${rows.length} stud${rows.length === 1 ? "y" : "ies"}`;
  for (const tr of $("worklist-body").rows) tr.onclick = () => go("/study/" + tr.dataset.id);
  scheduleWorklist(rows);
}

function scheduleWorklist(rows) {
  // Poll also when nothing is pending: studies deleted or added elsewhere must show up here.
  const pending = rows.some((s) => s.status === "queued" || s.status === "processing");
  clearTimeout(S.listPoll);
  if (location.pathname === "/") S.listPoll = setTimeout(loadWorklist, pending ? 1000 : LIST_POLL_MS);
}

// ---- viewer -------------------------------------------------------------------------------
function probTable(el, probs) {
  el.innerHTML = labelsOf(probs).map((l) => {
    const p = probs ? probs[l] : null;
    return `<tr class="${p != null && p >= threshold(l) ? "flag" : ""}"><td>${esc(l)}</td><td><div class="bar"><i style="width:${
      p == null ? 0 : (100 * p).toFixed(1)}%;background:${colour(l)}"></i></div></td><td class="v">${pct(p)}</td></tr>`;
  }).join("");
}

function windowParam() { return S.window; }
// Slices are numbered study-wide by the API; the viewer scrolls one series at a time.
function studyIndex(i) { return S.slices[i].index; }
function sliceUrl(i) { return `/api/studies/${S.study.id}/slices/${studyIndex(i)}.png?window=${encodeURIComponent(windowParam())}`; }

function showSlice(i, prefetch = true) {
  if (!S.slices.length) return;
  S.index = Math.max(0, Math.min(S.slices.length - 1, i));
  const sl = S.slices[S.index];
  $("slice-img").src = sliceUrl(S.index); $("slice-img").hidden = false;
  $("slider").value = S.index;
  $("slice-index").textContent = `${S.index + 1} / ${S.slices.length}`;
  $("slice-index").dataset.index = S.index;
  $("overlay-tl").textContent = `Im ${S.index + 1}/${S.slices.length}\nz ${sl.z.toFixed(1)} mm`;
  $("overlay-tr").textContent = `${S.study.patient_id || ""}\nW ${windowLabel()}`;
  probTable($("slice-probs"), sl.probabilities);
  for (const b of $("top-slices").querySelectorAll("button")) b.classList.toggle("cur", +b.dataset.index === S.index);
  updateHeat(); drawCursor(); loadMeta();
  if (prefetch) for (const d of [1, -1, 2, 3]) { const j = S.index + d; if (j >= 0 && j < S.slices.length) new Image().src = sliceUrl(j); }
}

function windowLabel() {
  if (S.window.includes(",")) { const [c, w] = S.window.split(","); return `L ${c} W ${w}`; }
  return S.window;
}

function updateHeat() {
  const on = $("heat-toggle").checked, img = $("heat-img");
  img.hidden = !on;
  img.style.opacity = $("heat-opacity").value / 100;
  if (!on) return;
  const url = (i) => `/api/studies/${S.study.id}/slices/${studyIndex(i)}/heatmap.png?label=${encodeURIComponent($("heat-label").value)}`;
  img.src = url(S.index);
  // Warm the server's heatmap cache for the neighbours, so scrolling on stays instant.
  for (const d of [1, -1]) { const j = S.index + d; if (j >= 0 && j < S.slices.length) new Image().src = url(j); }
}

let metaTimer = null;
function loadMeta() {
  clearTimeout(metaTimer);
  metaTimer = setTimeout(async () => {
    if (!S.study) return;
    const sid = S.study.id;
    const m = await api(`/api/studies/${sid}/slices/${studyIndex(S.index)}/meta`).catch(() => ({}));
    if (!S.study || S.study.id !== sid) return;  // another study is open now
    const keys = ["sop_instance_uid", "series_instance_uid", "study_instance_uid", "patient_id", "modality",
      "instance_number", "rows", "columns", "pixel_spacing", "slice_thickness", "image_position_patient",
      "rescale_slope", "rescale_intercept", "bits_stored", "photometric_interpretation", "transfer_syntax_uid"];
    $("meta").innerHTML = keys.filter((k) => m[k] != null && m[k] !== "").map((k) =>
      `<dt>${k.replace(/_/g, " ")}</dt><dd>${esc(Array.isArray(m[k]) ? m[k].map((v) => +(+v).toFixed(2)).join(", ") : m[k])}</dd>`).join("");
  }, 120);
}

function drawChart() {
  const svg = $("chart"), n = S.slices.length, W = 1000, H = 150;
  if (!n) { svg.innerHTML = ""; return; }
  const x = (i) => (n === 1 ? W / 2 : (i / (n - 1)) * (W - 20) + 10), y = (p) => H - 8 - p * (H - 16);
  let out = `<line x1="0" x2="${W}" y1="${y(0.5)}" y2="${y(0.5)}" stroke="#333b45" stroke-dasharray="6 6" vector-effect="non-scaling-stroke"/>`;
  const labels = labelsOf(S.slices[0].probabilities);
  for (const l of [...labels].reverse()) {
    if (!S.slices[0].probabilities) break;
    const pts = S.slices.map((s, i) => `${x(i).toFixed(1)},${y(s.probabilities[l]).toFixed(1)}`).join(" ");
    out += `<polyline data-label="${esc(l)}" points="${pts}" fill="none" stroke="${colour(l)}" stroke-width="${l === scoreName(labels) ? 2.5 : 1.6}" vector-effect="non-scaling-stroke"/>`;
  }
  out += `<line id="cursor" y1="0" y2="${H}" stroke="#4aa3ff" stroke-width="2" vector-effect="non-scaling-stroke"/>`;
  svg.innerHTML = out; drawCursor();
  svg.onclick = (e) => {
    const r = svg.getBoundingClientRect(), fx = ((e.clientX - r.left) / r.width) * W;
    showSlice(Math.round(((fx - 10) / (W - 20)) * (n - 1)));
  };
  $("chart-legend").innerHTML = labels.map((l) => `<span><i style="background:${colour(l)}"></i>${esc(l)}</span>`).join("") +
    '<span>dashed line: 50%</span>';
}

function drawCursor() {
  const c = document.getElementById("cursor"), n = S.slices.length;
  if (!c) return;
  const xv = n === 1 ? 500 : (S.index / (n - 1)) * 980 + 10;
  c.setAttribute("x1", xv); c.setAttribute("x2", xv);
}

// Never the wrong patient: a failed load empties every panel before saying why.
function clearViewer(message) {
  clearTimeout(S.poll); clearTimeout(metaTimer);
  S.study = null; S.slices = []; S.index = 0;
  for (const id of ["slice-img", "heat-img"]) { $(id).removeAttribute("src"); }
  $("heat-img").hidden = true; $("slice-img").hidden = true;
  for (const id of ["study-probs", "slice-probs", "top-slices", "meta", "chart", "chart-legend",
    "study-errors", "series-select"]) $(id).innerHTML = "";
  for (const id of ["overlay-tl", "overlay-tr", "overlay-bl", "study-status"]) $(id).textContent = "";
  $("series-select").hidden = true; $("study-status").className = "badge";
  $("slider").max = 0; $("slider").value = 0; $("slice-index").textContent = "–";
  setDownloads(null);
  $("delete-study").disabled = true;
  $("study-title").textContent = message;
}

function setDownloads(d) {
  // Download links only where there are results to download.
  const ready = !!d && (d.status === "done" || d.status === "partial");
  for (const [id, ext] of [["dl-csv", "csv"], ["dl-json", "json"]]) {
    const a = $(id);
    if (ready) a.href = `/api/studies/${d.id}/results.${ext}`; else a.removeAttribute("href");
    a.classList.toggle("disabled", !ready);
    a.setAttribute("aria-disabled", String(!ready));
    a.title = ready ? "" : "results not ready";
  }
}

function viewing(id) {
  const m = location.pathname.match(/^\/study\/([^/]+)/);
  return !!m && decodeURIComponent(m[1]) === id;
}

async function loadStudy(id) {
  clearTimeout(S.poll);
  let d;
  try { d = await api(`/api/studies/${id}`); } catch (e) {
    if (viewing(id)) clearViewer(e.message);
    return;
  }
  if (!viewing(id)) return;  // the user moved on while this answer was on its way
  const first = !S.study || S.study.id !== d.id;
  S.study = d;
  if (first) S.series = bestSeries(d);
  S.series = Math.max(0, Math.min(S.series, d.series.length - 1));
  S.slices = d.series.length ? d.series[S.series].slices : [];
  const nSeries = d.series.length > 1 ? ` · ${d.series.length} series` : "";
  $("study-title").textContent = `${d.patient_id || "Unknown patient"} · ${d.n_slices} slices${nSeries} · ${d.id}`;
  drawSeriesPicker(d);
  $("study-status").textContent = d.status === "processing" ? `processing ${pct(d.progress)}` : d.status;
  $("study-status").className = "badge " + d.status;
  probTable($("study-probs"), d.probabilities);
  const ood = d.series.filter((s) => s.in_domain === false).length;
  $("domain-banner").hidden = !ood;
  $("domain-banner").textContent = ood ? `${ood === d.series.length ? "This study is" : `${ood} of ${d.series.length} series are`} ${d.domain_note}.` : "";
  $("slider").max = Math.max(0, S.slices.length - 1);
  setDownloads(d); $("delete-study").disabled = false;
  $("study-errors").innerHTML = d.errors.map((e) => `<li>${esc(e.file)}: ${esc(e.reason)}</li>`).join("");
  drawChart(); drawTops();
  showSlice(first ? bestSlice() : S.index, first);
  // Keep checking after results too: a study deleted elsewhere must vanish from this page.
  const pending = d.status === "queued" || d.status === "processing";
  S.poll = setTimeout(() => loadStudy(id), pending ? 1000 : STUDY_POLL_MS);
}

function bestSeries(d) {
  // Open on the series holding the most suspicious slice (the first one before results).
  let best = 0, top = -1;
  d.series.forEach((s, k) => s.slices.forEach((sl) => {
    if ((score(sl.probabilities) ?? -1) > top) { top = score(sl.probabilities); best = k; }
  }));
  return best;
}

function drawSeriesPicker(d) {
  const pick = $("series-select");
  pick.hidden = d.series.length < 2;
  pick.innerHTML = d.series.map((s, k) => {
    const p = s.probabilities ? ` · ${esc(scoreName(Object.keys(s.probabilities)))} ${pct(score(s.probabilities))}${s.in_domain === false ? " (outside training data)" : ""}` : "";
    return `<option value="${k}">Series ${k + 1}: ${s.n_slices} slices${p} · …${esc(s.series_instance_uid.slice(-8))}</option>`;
  }).join("");
  pick.value = String(S.series);
}

function drawTops() {
  // The five most suspicious slices by p(any) (or the largest label's p), most suspicious first.
  const ranked = S.slices.map((s, i) => [score(s.probabilities) ?? -1, i]).filter(([p]) => p >= 0)
    .sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("top-slices").innerHTML = ranked.map(([p, i]) =>
    `<button type="button" data-index="${i}">#${i + 1} <b class="${p >= scoreThreshold() ? "hi" : ""}">${pct(p)}</b></button>`).join("") ||
    '<span class="muted">results pending</span>';
  for (const b of $("top-slices").querySelectorAll("button")) b.onclick = () => showSlice(+b.dataset.index);
}

function bestSlice() {
  // Open on the slice the model finds most suspicious: the one to look at first.
  let best = 0;
  S.slices.forEach((s, i) => { if (s.probabilities && score(s.probabilities) > (score(S.slices[best].probabilities) ?? -1)) best = i; });
  return best;
}

function setupViewer() {
  $("slider").oninput = (e) => showSlice(+e.target.value);
  $("series-select").onchange = (e) => {
    S.series = +e.target.value; S.slices = S.study.series[S.series].slices;
    $("slider").max = Math.max(0, S.slices.length - 1);
    drawChart(); drawTops(); showSlice(bestSlice());
  };
  $("prev").onclick = () => showSlice(S.index - 1);
  $("next").onclick = () => showSlice(S.index + 1);
  $("image-wrap").addEventListener("wheel", (e) => { e.preventDefault(); showSlice(S.index + Math.sign(e.deltaY)); }, {passive: false});
  document.addEventListener("keydown", (e) => {
    if ($("viewer").hidden || ["INPUT", "SELECT"].includes(e.target.tagName) && e.target.type !== "range") return;
    const step = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10}[e.key];
    if (step) { e.preventDefault(); showSlice(S.index + step); }
    if (e.key === "Home") showSlice(0);
    if (e.key === "End") showSlice(S.slices.length - 1);
  });
  const presets = {brain: [40, 80], subdural: [80, 200], bone: [600, 2800]};
  for (const b of $("window-buttons").querySelectorAll("button")) b.onclick = () => {
    S.window = b.dataset.window; [$("win-center").value, $("win-width").value] = presets[S.window];
    for (const o of $("window-buttons").querySelectorAll("button")) o.classList.toggle("active", o === b);
    showSlice(S.index);
  };
  $("win-apply").onclick = () => {
    S.window = `${+$("win-center").value},${Math.max(1, +$("win-width").value)}`;
    for (const o of $("window-buttons").querySelectorAll("button")) o.classList.remove("active");
    showSlice(S.index);
  };
  $("heat-toggle").onchange = updateHeat; $("heat-label").onchange = updateHeat;
  $("heat-opacity").oninput = () => { $("heat-img").style.opacity = $("heat-opacity").value / 100; };
  // A slice that fails to load may mean the study was deleted: re-check at once.
  $("slice-img").onerror = () => {
    if (S.study && !S.imgRetry && $("slice-img").getAttribute("src")) { S.imgRetry = true; loadStudy(S.study.id); }
  };
  $("slice-img").onload = () => { S.imgRetry = false; };
  $("delete-study").onclick = async () => {
    if (!confirm("Delete this study and its results from the server?")) return;
    await api(`/api/studies/${S.study.id}`, {method: "DELETE"}); go("/");
  };
}

// ---- routing ------------------------------------------------------------------------------
function go(path) { history.pushState({}, "", path); route(); }
function route() {
  const m = location.pathname.match(/^\/study\/([^/]+)/);
  $("worklist").hidden = !!m; $("viewer").hidden = !m;
  if (m) {
    clearTimeout(S.listPoll);
    const id = decodeURIComponent(m[1]);
    if (!S.study || S.study.id !== id) clearViewer("Loading…");
    loadStudy(id); $("image-wrap").focus();
  }
  else { clearTimeout(S.poll); S.study = null; loadWorklist(); }
}

window.addEventListener("popstate", route);
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (a) { e.preventDefault(); go(a.getAttribute("href")); }
});
for (const id of ["search", "status-filter", "flag-filter"]) $(id).addEventListener("input", loadWorklist);
setupUpload(); setupViewer(); loadInfo(); route();
