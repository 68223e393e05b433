// The page: builds the form from the server's lists and drives the /jobs API (submit, poll, interrupt).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { modules: {}, models: [], job: null, units: 3 };
const MODES = ["Balanced", "My prompt is more important", "ControlNet is more important"];
const RESIZE = ["Crop and Resize", "Just Resize", "Resize and Fill"];

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
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
  for (const o of options) s.append(el("option", { value: o, text: o }));
  if (value !== undefined) s.value = value;
  return s;
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

function buildUnit(i) {
  const p = `unit${i}-`;
  const box = el("fieldset", { class: "unit", id: `unit${i}` }, [el("legend", { text: `ControlNet unit ${i}` })]);
  const enabled = el("input", { type: "checkbox", id: p + "enabled" });
  const image = el("input", { type: "file", accept: "image/*", id: p + "image" });
  const mask = el("input", { type: "file", accept: "image/*", id: p + "mask" });
  const thumb = el("img", { id: p + "thumb", alt: "condition image" });
  const preview = el("img", { id: p + "preview", alt: "detected map" });
  const previewBtn = el("button", { type: "button", id: p + "preview-btn", text: "Preview" });
  const usePreview = el("input", { type: "checkbox", id: p + "use-preview" });
  const sliders = el("div", { class: "row", id: p + "sliders" });
  const module = select(p + "module", Object.keys(state.modules), "none");
  box.append(
    el("div", { class: "row" }, [labelled("Enable", enabled), labelled("Pixel perfect", el("input", { type: "checkbox", id: p + "pixel-perfect" })),
      labelled("Use preview as input", usePreview)]),
    el("div", { class: "row" }, [labelled("Condition image", image), labelled("Region mask (optional)", mask)]),
    el("div", { class: "thumbs" }, [thumb, preview]),
    el("div", { class: "row" }, [labelled("Preprocessor", module), labelled("ControlNet", select(p + "model", state.models)), previewBtn]),
    sliders,
    el("div", { class: "row" }, [
      labelled("Weight", el("input", { type: "number", id: p + "weight", min: 0, max: 2, step: 0.05, value: 1 })),
      labelled("Start", el("input", { type: "number", id: p + "start", min: 0, max: 1, step: 0.05, value: 0 })),
      labelled("End", el("input", { type: "number", id: p + "end", min: 0, max: 1, step: 0.05, value: 1 }))]),
    el("div", { class: "row" }, [labelled("Control mode", select(p + "mode", MODES)), labelled("Resize mode", select(p + "resize", RESIZE))]));
  image.addEventListener("change", async () => {
    thumb.src = (await readFile(image)) || "";
    enabled.checked = true;
    usePreview.checked = false;
  });
  module.addEventListener("change", () => buildSliders(i));
  previewBtn.addEventListener("click", () => runPreview(i));
  return box;
}

function buildSliders(i) {
  const p = `unit${i}-`, box = $(p + "sliders");
  box.replaceChildren();
  const detail = state.modules[$(p + "module").value] || { sliders: [] };
  detail.sliders.forEach((s, k) => {
    const input = el("input", { type: "number", id: `${p}slider${k}`, min: s.min, max: s.max, step: s.step, value: s.value });
    box.append(labelled(s.name, input));
  });
}

function sliderValues(i) {  // -> [processor_res, threshold_a, threshold_b] as A1111 numbers (-1: default)
  const p = `unit${i}-`, detail = state.modules[$(p + "module").value] || { sliders: [] };
  const values = detail.sliders.map((s, k) => Number($(`${p}slider${k}`).value));
  const hasRes = detail.sliders.length && detail.sliders[0].name === "Preprocessor Resolution";
  const res = hasRes ? values.shift() : -1;
  return [res, values[0] ?? -1, values[1] ?? -1];
}

function b64(dataUrl) { return dataUrl ? dataUrl.slice(dataUrl.indexOf(",") + 1) : ""; }

async function runJob(kind, body, onProgress) {  // submit to /jobs, poll until finished
  let job = await api(`/jobs/${kind}`, body);
  while (!["done", "failed", "interrupted", "cancelled"].includes(job.state)) {
    if (onProgress) onProgress(job);
    await new Promise((r) => setTimeout(r, 200));
    job = await api(`/jobs/${job.job_id}`);
  }
  if (job.state === "failed") throw new Error(job.error.detail);
  if (job.state === "cancelled") throw new Error(`the job was cancelled: ${job.cancelled}`);
  return job;
}

async function runPreview(i) {
  const p = `unit${i}-`, image = await readFile($(p + "image"));
  if (!image) return status(`unit ${i}: choose a condition image first`, true);
  let [res, a, b] = sliderValues(i);
  if ($(p + "pixel-perfect").checked) res = pixelPerfect($(p + "thumb"), $(p + "resize").value);
  status(`unit ${i}: detecting…`);
  try {
    const job = await runJob("detect", { controlnet_module: $(p + "module").value, controlnet_input_images: [b64(image)],
      controlnet_processor_res: res, controlnet_threshold_a: a, controlnet_threshold_b: b });
    $(p + "preview").src = "data:image/png;base64," + job.result.images[0];
    $(p + "preview").classList.add("ready");
    status(`unit ${i}: preview ready`);
  } catch (e) { status(e.message, true); }
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
    effective_region_mask: mask ? b64(mask) : null };
}

async function generate() {
  const args = [];
  for (let i = 0; i < state.units; i++) args.push(await unitArgs(i));
  const body = { prompt: $("prompt").value, negative_prompt: $("negative").value, sampler_name: $("sampler").value,
    steps: Number($("steps").value), cfg_scale: Number($("cfg").value), seed: Number($("seed").value),
    width: Number($("width").value), height: Number($("height").value), batch_size: Number($("batch_size").value),
    n_iter: Number($("n_iter").value), alwayson_scripts: { controlnet: { args } } };
  $("generate").disabled = true; $("interrupt").disabled = false; $("progress").value = 0;
  status("queued…");
  try {
    const job = await runJob("txt2img", body, (j) => {
      state.job = j.job_id;
      $("progress").value = j.progress;
      status(j.state === "queued" ? `queued (position ${j.queue_position})` : `sampling: step ${j.step} of ${j.total}`);
    });
    showResult(job);
    status(job.state === "interrupted" ? `interrupted at step ${job.step} of ${job.total}: the images reached so far` : "done");
    $("progress").value = job.progress;  // the real fraction after an interrupt
  } catch (e) { status(e.message, true); }
  state.job = null; $("generate").disabled = false; $("interrupt").disabled = true;
}

function showResult(job) {
  const info = JSON.parse(job.result.info), n = info.all_seeds.length, g = $("gallery");
  g.replaceChildren();
  job.result.images.forEach((data, k) => {
    const isMap = k >= n, src = "data:image/png;base64," + data;
    const name = isMap ? `map-${job.job_id}-${k - n}.png` : `${job.job_id}-${info.all_seeds[k]}.png`;
    const caption = isMap ? `condition map ${k - n}` : `seed ${info.all_seeds[k]}`;
    g.append(el("figure", {}, [el("img", { src, class: isMap ? "map" : "output", alt: caption }),
      el("figcaption", {}, [caption + " · ", el("a", { href: src, download: name, text: "download PNG" })])]));
  });
}

function status(text, error = false) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

async function init() {
  const [config, models, modules, samplers] = await Promise.all([api("/config"), api("/controlnet/model_list"),
    api("/controlnet/module_list"), api("/sdapi/v1/samplers")]);
  state.units = config.units; state.models = models.model_list; state.modules = modules.module_detail;
  $("model").textContent = config.model;
  $("width").value = $("height").value = config.default_size;
  for (const s of samplers) $("sampler").append(el("option", { value: s.name, text: s.name }));
  $("sampler").value = "DDIM";
  for (let i = 0; i < state.units; i++) { $("units").append(buildUnit(i)); buildSliders(i); }
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", () => state.job && api(`/jobs/${state.job}/interrupt`, {}));
  document.body.dataset.ready = "1";
}

init().catch((e) => status(`could not load the server's lists: ${e.message}`, true));
