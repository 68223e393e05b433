// The page: builds the form from the server's lists and drives the /jobs API (submit, poll, interrupt).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { modules: {}, models: [], types: {}, recommended: {}, defaults: {}, job: null, units: 3, runs: 0, previewGen: [], maskDrawn: false };
const MODES = ["Balanced", "My prompt is more important", "ControlNet is more important"];
const RESIZE = ["Crop and Resize", "Just Resize", "Resize and Fill"];
const KEEP_RUNS = 12;  // results history: the last runs, newest first
// the API's field names -> the page's controls (ids; unit fields: the part after "unit{i}-")
const PAGE_FIELDS = { prompt: "prompt", negative_prompt: "negative", sampler_name: "sampler", sampler_index: "sampler", steps: "steps",
  cfg_scale: "cfg", seed: "seed", width: "width", height: "height", batch_size: "batch_size", n_iter: "n_iter",
  init_images: "init-image", denoising_strength: "strength", mask: "inpaint-mask", control_image: "control-image" };
const UNIT_FIELDS = { enabled: "enabled", image: "image", input_image: "image", module: "module", model: "model", weight: "weight",
  guidance_start: "start", guidance_end: "end", control_mode: "mode", resize_mode: "resize", pixel_perfect: "pixel-perfect",
  effective_region_mask: "mask", processor_res: "processor_res", threshold_a: "threshold_a", threshold_b: "threshold_b" };
const DETECT_FIELDS = { controlnet_module: "module", controlnet_input_images: "image", controlnet_images: "image",
  controlnet_processor_res: "processor_res", controlnet_threshold_a: "threshold_a", controlnet_threshold_b: "threshold_b" };

class ApiError extends Error {  // an answer's detail, with the field it names (when it names one)
  constructor(detail, field) { super(detail); this.field = field || null; }
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(data.detail || `HTTP ${r.status}`, data.field);
  return data;
}

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function labelled(text, input) { return el("label", {}, [text + " ", input]); }

function select(id, options, value) {
  const s = el("select", { id });
  setOptions(s, options, value);
  return s;
}

function setOptions(s, options, value) {
  s.replaceChildren(...options.map((o) => el("option", { value: o, text: o })));
  if (value !== undefined && options.includes(value)) s.value = value;
}

function readFile(input) {  // -> data URL of the chosen file, or null
  return new Promise((resolve) => {
    const f = input.files[0];
    if (!f) return resolve(null);
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.readAsDataURL(f);
  });
}

function loadImage(src) { return new Promise((resolve) => { const im = new Image(); im.onload = () => resolve(im); im.src = src; }); }

// ------------------------------------------------------------------------------------------ units

function buildUnit(i) {
  const p = `unit${i}-`;
  const enabled = el("input", { type: "checkbox", id: p + "enabled" });
  const image = el("input", { type: "file", accept: "image/*", id: p + "image" });
  const thumb = el("img", { id: p + "thumb", alt: "condition image" });
  const preview = el("img", { id: p + "preview", alt: "detected map" });
  const usePreview = el("input", { type: "checkbox", id: p + "use-preview", disabled: "" });
  const pixelPerfect = el("input", { type: "checkbox", id: p + "pixel-perfect", checked: "" });
  const type = select(p + "type", Object.keys(state.types), "All");
  const module = select(p + "module", []);
  const model = select(p + "model", []);
  const resize = select(p + "resize", RESIZE);
  const previewBtn = el("button", { type: "button", id: p + "preview-btn", text: "Preview" });
  const body = el("div", { class: "unit-body" }, [
    el("div", { class: "row" }, [labelled("Enable", enabled), labelled("Pixel perfect", pixelPerfect), labelled("Use preview as input", usePreview)]),
    el("div", { class: "row" }, [labelled("Condition image", image), labelled("Region mask (optional)", el("input", { type: "file", accept: "image/*", id: p + "mask" }))]),
    el("div", { class: "thumbs" }, [thumb, preview]),
    el("div", { class: "row" }, [labelled("Control Type", type), labelled("Preprocessor", module), labelled("ControlNet", model),
      previewBtn]),
    el("div", { class: "row", id: p + "sliders" }),
    el("div", { class: "row" }, [
      labelled("Weight", el("input", { type: "number", id: p + "weight", min: 0, max: 2, step: 0.05, value: state.defaults.weight })),
      labelled("Start", el("input", { type: "number", id: p + "start", min: 0, max: 1, step: 0.05, value: 0 })),
      labelled("End", el("input", { type: "number", id: p + "end", min: 0, max: 1, step: 0.05, value: 1 }))]),
    el("div", { class: "row" }, [labelled("Control mode", select(p + "mode", MODES, state.defaults.control_mode)),
      labelled("Resize mode", resize)]),
    el("p", { class: "unit-status", id: p + "status", role: "status" })]);
  // units after the first stay folded until the user opens or uses them (Generate stays in view)
  const box = el("details", { class: "unit box", id: `unit${i}` }, [el("summary", { text: `ControlNet Unit ${i}` }), body]);
  if (i === 0) box.open = true;
  image.addEventListener("change", async () => {
    thumb.src = (await readFile(image)) || "";
    enabled.checked = true;
    box.open = true;
    invalidatePreview(i);
    applyRecommended();
  });
  type.addEventListener("change", () => { pickControlType(i); invalidatePreview(i); applyRecommended(); });
  module.addEventListener("change", () => { buildSliders(i); invalidatePreview(i); });
  model.addEventListener("change", applyRecommended);
  enabled.addEventListener("change", applyRecommended);
  for (const input of [pixelPerfect, resize]) input.addEventListener("change", () => { syncResolution(i); invalidatePreview(i); });
  previewBtn.addEventListener("click", () => runPreview(i));
  return box;
}

function pickControlType(i) {  // sd-webui-controlnet's Control Type: its preprocessors and models, with their defaults
  const p = `unit${i}-`, t = state.types[$(p + "type").value];
  setOptions($(p + "module"), t.module_list.filter((m) => m in state.modules), t.default_option);
  const models = t.model_list.filter((m) => m !== "None");
  setOptions($(p + "model"), models.length ? models : ["None"], t.default_model);
  buildSliders(i);
}

function buildSliders(i) {
  const p = `unit${i}-`, box = $(p + "sliders");
  box.replaceChildren();
  const detail = state.modules[$(p + "module").value] || { sliders: [] };
  detail.sliders.forEach((s, k) => {
    const input = el("input", { type: "number", id: `${p}slider${k}`, min: s.min, max: s.max, step: s.step, value: s.value });
    input.addEventListener("input", () => invalidatePreview(i));
    box.append(labelled(s.name, input));
  });
  syncResolution(i);
}

function hasResolution(i) {
  const detail = state.modules[$(`unit${i}-module`).value] || { sliders: [] };
  return detail.sliders.length > 0 && detail.sliders[0].name === "Preprocessor Resolution";
}

function syncResolution(i) {  // pixel perfect sets the resolution from the picture: the slider is off then (as A1111)
  const res = $(`unit${i}-slider0`);
  if (res && hasResolution(i)) res.disabled = $(`unit${i}-pixel-perfect`).checked;
}

function sliderId(i, slot) {  // "processor_res" | "threshold_a" | "threshold_b" -> the slider's id
  const offset = hasResolution(i) ? 1 : 0;
  const k = slot === "processor_res" ? (offset ? 0 : -1) : offset + (slot === "threshold_a" ? 0 : 1);
  return k >= 0 ? `unit${i}-slider${k}` : null;
}

function sliderValues(i) {  // -> [processor_res, threshold_a, threshold_b] as A1111 numbers (-1: default)
  const value = (slot) => { const s = $(sliderId(i, slot) || "-"); return s ? Number(s.value) : -1; };
  return [value("processor_res"), value("threshold_a"), value("threshold_b")];
}

function invalidatePreview(i) {  // the map no longer matches the unit's image or settings: it goes, and so does its use
  const p = `unit${i}-`;
  state.previewGen[i] = (state.previewGen[i] || 0) + 1;
  $(p + "preview").removeAttribute("src");
  $(p + "preview").classList.remove("ready");
  $(p + "use-preview").checked = false;
  $(p + "use-preview").disabled = true;
}

function invalidatePixelPerfectPreviews() {  // the output size sets a pixel-perfect resolution
  for (let i = 0; i < state.units; i++) if ($(`unit${i}-pixel-perfect`).checked) invalidatePreview(i);
}

// ------------------------------------------------------------------------------------------ recommended settings

function agreed(recs, name) {  // recommended.choose's rule: the value the ControlNets recommend when they agree
  const values = new Set(recs.filter((r) => name in r).map((r) => r[name]));
  return values.size === 1 ? [...values][0] : undefined;
}

function setUntouched(id, value) { if (!$(id).dataset.touched && value !== undefined) $(id).value = value; }

function applyRecommended() {  // what the API gives an omitted value, shown in every field the user has not changed
  const recs = [];
  for (let i = 0; i < state.units; i++) {
    const rec = state.recommended[$(`unit${i}-model`).value] || {};
    setUntouched(`unit${i}-weight`, rec.weight ?? state.defaults.weight);
    setUntouched(`unit${i}-mode`, rec.control_mode ?? state.defaults.control_mode);
    if ($(`unit${i}-enabled`).checked) recs.push(rec);
  }
  for (const [id, name] of [["cfg", "cfg_scale"], ["sampler", "sampler_name"], ["steps", "steps"]]) {
    setUntouched(id, agreed(recs, name) ?? state.defaults[name]);
  }
}

// ------------------------------------------------------------------------------------------ errors at their controls

function controlOf(field, unit) {  // an API field ("alwayson_scripts.controlnet.args[0].weight", "steps") -> [control id, unit]
  const m = field.match(/^alwayson_scripts\.controlnet\.args\[(\d+)\](?:\.(\w+))?/);
  if (m) return [unitControl(Number(m[1]), m[2]), Number(m[1])];
  const name = field.replace(/\[\d+\]$/, "");
  if (unit !== null && name in DETECT_FIELDS) return [unitControl(unit, DETECT_FIELDS[name]), unit];
  return [PAGE_FIELDS[name] || null, null];
}

function unitControl(i, name) {
  const part = UNIT_FIELDS[name];
  if (!part) return null;
  return part.startsWith("processor_res") || part.startsWith("threshold") ? sliderId(i, part) : `unit${i}-${part}`;
}

function controlName(id) {  // what the page calls a control: its label, with its unit
  const label = $(id).closest("label"), unit = id.match(/^unit(\d+)-/);
  const text = label ? label.firstChild.textContent.trim() : id;
  return unit ? `Unit ${unit[1]} ${text.charAt(0).toLowerCase() + text.slice(1)}` : text;
}

function pageWords(text) {  // any API path left in a message -> the page's names
  return text.replace(/alwayson_scripts\.controlnet\.args\[(\d+)\](\.\w+)?/g, (m, n) => {
    const [id] = controlOf(m, null);
    return id && $(id) ? controlName(id) : `Unit ${n}`;
  });
}

function showError(err, unit = null) {  // at the control it names (and its unit), and beside Generate
  const field = err.field || (err.message.match(/^([\w.[\]]+): /) || [])[1] || "";
  let text = err.message;
  if (field && text.startsWith(field + ": ")) text = text.slice(field.length + 2);
  const [id, u] = field ? controlOf(field, unit) : [null, unit];
  const control = id && $(id);
  const message = control ? `${controlName(id)}: ${pageWords(text)}` : pageWords(err.message);
  status(message, true);
  if (u !== null) { $(`unit${u}`).open = true; unitStatus(u, message, true); }
  if (control) {
    for (let d = control.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
    control.classList.add("invalid");
    control.setAttribute("aria-invalid", "true");
    const slot = el("span", { class: "field-error", id: `${id}-error`, text: message });
    (control.closest("label") || control.parentElement).append(slot);
    control.scrollIntoView({ block: "center" });
  }
}

function clearErrors() {
  for (const e of document.querySelectorAll(".field-error")) e.remove();
  for (const e of document.querySelectorAll(".invalid")) { e.classList.remove("invalid"); e.removeAttribute("aria-invalid"); }
  for (let i = 0; i < state.units; i++) unitStatus(i, "");
}

function status(text, error = false) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

function unitStatus(i, text, error = false) {
  const s = $(`unit${i}-status`);
  s.textContent = text;
  s.className = "unit-status" + (error ? " error" : "");
}

// ------------------------------------------------------------------------------------------ jobs

function b64(dataUrl) { return dataUrl ? dataUrl.slice(dataUrl.indexOf(",") + 1) : ""; }

async function runJob(kind, body, onProgress) {  // submit to /jobs, poll until finished
  let job = await api(`/jobs/${kind}`, body);
  while (!["done", "failed", "interrupted", "cancelled"].includes(job.state)) {
    if (onProgress) onProgress(job);
    await new Promise((r) => setTimeout(r, 200));
    job = await api(`/jobs/${job.job_id}`);
  }
  if (job.state === "failed") throw new ApiError(job.error.detail, job.error.field);
  if (job.state === "cancelled") throw new Error(`the job was cancelled: ${job.cancelled}`);
  return job;
}

async function runPreview(i) {
  const p = `unit${i}-`;
  clearErrors();
  invalidatePreview(i);  // a new preview replaces the map; a failed one leaves none
  const gen = state.previewGen[i], image = await readFile($(p + "image"));
  if (!image) return showError(new ApiError("choose a condition image first", "controlnet_input_images"), i);
  let [res, a, b] = sliderValues(i);
  if ($(p + "pixel-perfect").checked) res = pixelPerfect($(p + "thumb"), $(p + "resize").value);
  unitStatus(i, "detecting…");
  try {
    const job = await runJob("detect", { controlnet_module: $(p + "module").value, controlnet_input_images: [b64(image)],
      controlnet_processor_res: res, controlnet_threshold_a: a, controlnet_threshold_b: b });
    if (gen !== state.previewGen[i]) return;  // the image or a setting changed meanwhile: this map is stale
    $(p + "preview").src = "data:image/png;base64," + job.result.images[0];
    $(p + "preview").classList.add("ready");
    $(p + "use-preview").disabled = false;
    unitStatus(i, "preview ready");
  } catch (e) { if (gen === state.previewGen[i]) showError(e, i); }
}

function pixelPerfect(img, resize) {  // A1111's pixel_perfect_resolution: detect at the output size
  const h0 = img.naturalHeight, w0 = img.naturalWidth, h = Number($("height").value), w = Number($("width").value);
  const k = resize === "Resize and Fill" ? Math.min(h / h0, w / w0) : Math.max(h / h0, w / w0);
  return Math.max(64, Math.round(k * Math.min(h0, w0)));
}

async function unitArgs(i) {
  const p = `unit${i}-`;
  const usePreview = $(p + "use-preview").checked && $(p + "preview").classList.contains("ready");
  const image = usePreview ? $(p + "preview").src : await readFile($(p + "image"));
  const [res, a, b] = sliderValues(i);
  const mask = await readFile($(p + "mask"));
  return { enabled: $(p + "enabled").checked, image: b64(image), module: usePreview ? "none" : $(p + "module").value,
    model: $(p + "model").value, weight: Number($(p + "weight").value), guidance_start: Number($(p + "start").value),
    guidance_end: Number($(p + "end").value), control_mode: $(p + "mode").value, resize_mode: $(p + "resize").value,
    pixel_perfect: $(p + "pixel-perfect").checked, processor_res: res, threshold_a: a, threshold_b: b,
    effective_region_mask: mask ? b64(mask) : null, ...unionType(i) };
}

function unionType(i) {  // a union ControlNet reads the type its Control Type selects (none for All: the server says why)
  const type = state.unionTypes[$(`unit${i}-type`).value];
  return state.unionModels.includes($(`unit${i}-model`).value) && type ? { union_control_type: type } : {};
}

async function request() {  // -> [kind, body]: img2img (with the inpaint mask) when an init image is chosen
  const args = [];
  for (let i = 0; i < state.units; i++) args.push(await unitArgs(i));
  const body = { prompt: $("prompt").value, negative_prompt: $("negative").value, sampler_name: $("sampler").value,
    steps: Number($("steps").value), cfg_scale: Number($("cfg").value), seed: Number($("seed").value),
    width: Number($("width").value), height: Number($("height").value), batch_size: Number($("batch_size").value),
    n_iter: Number($("n_iter").value), alwayson_scripts: { controlnet: { args } } };
  const hint = await readFile($("control-image"));  // a FLUX.1 Control base's hint
  if (hint) body.control_image = b64(hint);
  const init = await readFile($("init-image"));
  if (!init) {
    if (state.maskDrawn) throw new ApiError("choose an init image to inpaint first", "init_images");
    return ["txt2img", body];
  }
  Object.assign(body, { init_images: [b64(init)], denoising_strength: Number($("strength").value) });
  if (state.maskDrawn) body.mask = b64(maskPng());
  return ["img2img", body];
}

async function generate() {
  clearErrors();
  $("generate").disabled = true; $("interrupt").disabled = false; $("progress").value = 0;
  status("queued…");
  try {
    const [kind, body] = await request();
    const job = await runJob(kind, body, (j) => {
      state.job = j.job_id;
      $("progress").value = j.progress;
      status(j.state === "queued" ? `queued (position ${j.queue_position})` : `sampling: step ${j.step} of ${j.total}`);
    });
    showResult(job, kind);
    status(job.state === "interrupted" ? `interrupted at step ${job.step} of ${job.total}: the images reached so far` : "done");
    $("progress").value = job.progress;  // the real fraction after an interrupt
  } catch (e) { showError(e); }
  state.job = null; $("generate").disabled = false; $("interrupt").disabled = true;
}

function showResult(job, kind) {  // a new run at the top of the history: its label, its images, "reuse seed"
  const info = JSON.parse(job.result.info), n = info.all_seeds.length;
  state.runs += 1;
  const units = Object.values(info.extra_generation_params || {}).map((u) => (u.match(/Model: ([^,]+)/) || [])[1]).filter(Boolean);
  const label = `#${state.runs} ${kind} · ${info.sampler_name}, ${info.steps} steps, CFG ${info.cfg_scale}, ${info.width}×${info.height}` +
    (units.length ? ` · ${units.join(", ")}` : "") + (info.interrupted ? " · interrupted" : "");
  const run = el("div", { class: "run", id: `run${state.runs}` }, [el("p", { class: "run-label", text: label })]);
  job.result.images.forEach((data, k) => {
    const isMap = k >= n, src = "data:image/png;base64," + data, seed = info.all_seeds[k];
    const name = isMap ? `map-${job.job_id}-${k - n}.png` : `${job.job_id}-${seed}.png`;
    const caption = isMap ? `condition map ${k - n}` : `seed ${seed}`;
    const parts = [caption + " · ", el("a", { href: src, download: name, text: "download PNG" })];
    if (!isMap) {
      const reuse = el("button", { type: "button", class: "reuse-seed", text: "reuse seed", "data-seed": seed });
      reuse.addEventListener("click", () => { $("seed").value = seed; $("seed").dataset.touched = "1"; });
      parts.push(" ", reuse);
    }
    run.append(el("figure", {}, [el("img", { src, class: isMap ? "map" : "output", alt: caption }), el("figcaption", {}, parts)]));
  });
  $("gallery").prepend(run);
  while ($("gallery").children.length > KEEP_RUNS) $("gallery").lastChild.remove();
}

// ------------------------------------------------------------------------------------------ inpaint mask

function maskPng() {  // the drawn/uploaded mask as A1111's img2img `mask`: white = repaint, black = keep
  const c = $("mask-canvas"), out = el("canvas", { width: c.width, height: c.height }), g = out.getContext("2d");
  g.fillStyle = "#000";
  g.fillRect(0, 0, out.width, out.height);
  g.drawImage(c, 0, 0);
  return out.toDataURL("image/png");
}

function resetMask(width, height) {
  const c = $("mask-canvas");
  c.width = width; c.height = height;
  state.maskDrawn = false;
}

function setupMaskEditor() {
  const c = $("mask-canvas"), g = () => c.getContext("2d");
  let last = null;
  const at = (e) => { const r = c.getBoundingClientRect(); return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height]; };
  const stroke = (e) => {
    const ctx = g(), [x, y] = at(e), from = last || [x, y];
    Object.assign(ctx, { strokeStyle: "#fff", lineWidth: Number($("brush").value) || 1, lineCap: "round", lineJoin: "round" });
    ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(x, y); ctx.stroke();
    last = [x, y];
    state.maskDrawn = true;
  };
  c.addEventListener("pointerdown", (e) => { c.setPointerCapture(e.pointerId); last = null; stroke(e); });
  c.addEventListener("pointermove", (e) => { if (last) stroke(e); });
  for (const end of ["pointerup", "pointercancel"]) c.addEventListener(end, () => { last = null; });
  $("init-image").addEventListener("change", async () => {
    const src = await readFile($("init-image"));
    $("init-thumb").src = src || "";
    if (!src) return resetMask(64, 64);
    const im = await loadImage(src);
    resetMask(im.naturalWidth, im.naturalHeight);
    $("brush").value = Math.max(2, Math.round(Math.min(im.naturalWidth, im.naturalHeight) / 12));
  });
  $("inpaint-mask").addEventListener("change", async () => {
    const src = await readFile($("inpaint-mask"));
    if (!src) return;
    const im = await loadImage(src);
    if (!$("init-thumb").getAttribute("src")) resetMask(im.naturalWidth, im.naturalHeight);
    g().clearRect(0, 0, c.width, c.height);
    g().drawImage(im, 0, 0, c.width, c.height);
    state.maskDrawn = true;
  });
  $("clear-mask").addEventListener("click", () => { g().clearRect(0, 0, c.width, c.height); state.maskDrawn = false; $("inpaint-mask").value = ""; });
}

// ------------------------------------------------------------------------------------------ start

async function init() {
  const [config, models, modules, samplers, types] = await Promise.all([api("/config"), api("/controlnet/model_list"),
    api("/controlnet/module_list"), api("/sdapi/v1/samplers"), api("/controlnet/control_types")]);
  Object.assign(state, { units: config.units, models: models.model_list, modules: modules.module_detail, types: types.control_types,
    recommended: config.recommended, defaults: config.defaults, unionModels: config.union_models, unionTypes: config.union_types });
  $("model").textContent = config.model;
  $("width").value = $("height").value = config.default_size;
  for (const s of samplers) $("sampler").append(el("option", { value: s.name, text: s.name }));
  for (let i = 0; i < state.units; i++) {
    $("units").append(buildUnit(i));
    pickControlType(i);
  }
  applyRecommended();
  // a value the user types is theirs: recommendations no longer replace it
  document.body.addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
  document.body.addEventListener("change", (e) => { if (e.isTrusted) e.target.dataset.touched = "1"; });
  for (const id of ["width", "height"]) $(id).addEventListener("change", invalidatePixelPerfectPreviews);
  setupMaskEditor();
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", () => state.job && api(`/jobs/${state.job}/interrupt`, {}));
  document.body.dataset.ready = "1";
}

init().catch((e) => status(`could not load the server's lists: ${e.message}`, true));
