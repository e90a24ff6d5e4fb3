// The form: the models and, for the selected one, every default, range and choice from its
// info endpoint; what the user typed, kept in localStorage; the server's errors, shown next to
// the field they name (or above the buttons when they name none).

import { json, token } from "./api.js";

export const $ = (id) => document.getElementById(id);
const FORM_KEY = "imagine.form";
// Parameters of a model that the form restores for it after a reload.
export const PARAMS = [
  "width",
  "height",
  "num_inference_steps",
  "guidance_scale",
  "scheduler",
  "seed",
];

// Shared by the modules of the page.
export const state = {
  info: null, // GET models/{id}/info of the selected model
  job: null, // the record of the job being followed (jobs.js)
  viewing: null, // {item, index} in the viewer (gallery.js)
  urls: new Map(), // object URLs of kept images, by "<job id>/<index>"
  countdown: null, // the timer of a 429's wait
};

export function showTokenForm() {
  $("token-form").hidden = false;
  $("token").value = token();
}

export async function loadModels() {
  clearErrors();
  let listing;
  try {
    listing = await json("models");
  } catch (err) {
    showError(err);
    return false;
  }
  const saved = savedForm();
  const ids = listing.models.map((m) => m.model_id);
  $("model").replaceChildren(
    ...listing.models.map((m) => option(m.model_id, `${m.model_id} · ${m.state}`)),
  );
  $("model").value = ids.includes(saved.model) ? saved.model : listing.default_model;
  const ready = listing.models.filter((m) => m.state === "ready").length;
  const plural = ids.length === 1 ? "model" : "models";
  $("server").textContent =
    `${ids.length} ${plural}, ${ready} loaded; default ${listing.default_model}`;
  $("prompt").value = saved.prompt ?? "";
  $("negative_prompt").value = saved.negative_prompt ?? "";
  if (saved.randomSeed !== undefined) $("random-seed").checked = saved.randomSeed;
  return loadInfo($("model").value, saved.model === $("model").value ? saved : null);
}

// Generate waits for this: the form must show the selected model's values before it runs.
export async function loadInfo(modelId, saved) {
  $("generate").disabled = true;
  state.info = null;
  let info;
  try {
    info = await json(`models/${modelPath(modelId)}/info`);
  } catch (err) {
    showError(err);
    return false;
  }
  state.info = info;
  const { defaults: d, limits: l } = info;
  number("num_inference_steps", d.num_inference_steps, 1, l.max_steps, 1);
  number("guidance_scale", d.guidance_scale, l.guidance_range[0], l.guidance_range[1], "any");
  number("width", d.width, l.size_multiple, null, l.size_multiple);
  number("height", d.height, l.size_multiple, null, l.size_multiple);
  const schedulers = info.schedulers.flatMap((name) => [
    name,
    ...(info.sigma_options?.[name] || []).map((o) => `${name}:${o}`),
  ]);
  $("scheduler").replaceChildren(...schedulers.map((s) => option(s, s.replace(":", " · "))));
  $("scheduler").value = d.scheduler;
  const presets = info.size_presets.map(({ width, height }, i) =>
    option(`${width}x${height}`, `${width} × ${height}${i === 0 ? " (default)" : ""}`),
  );
  $("size-preset").replaceChildren(...presets, option("", "Custom"));
  const outputs = Array.from({ length: l.max_outputs }, (_, i) => option(String(i + 1), i + 1));
  $("num_outputs").replaceChildren(...outputs);
  for (const id of ["prompt", "negative_prompt"]) $(id).maxLength = l.max_prompt_chars;
  $("model-hint").textContent =
    `${info.family} · ${d.width} × ${d.height} by default · ${info.state}`;
  const render = info.render_size;
  $("size-hint").textContent = render
    ? `This model draws at ${render.width} × ${render.height} and scales the picture ` +
      "to the size set here."
    : "";
  if (saved) {
    for (const id of PARAMS) {
      if (saved.params?.[id] !== undefined && saved.params[id] !== "")
        $(id).value = saved.params[id];
    }
    if (!$("scheduler").value) $("scheduler").value = d.scheduler;
    if (saved.num_outputs) $("num_outputs").value = saved.num_outputs;
  }
  syncPreset();
  $("generate").disabled = state.job !== null;
  return true;
}

function number(id, value, min, max, step) {
  const input = $(id);
  input.min = min ?? "";
  input.max = max ?? "";
  input.step = step;
  input.value = value;
}

function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  return element;
}

export function syncPreset() {
  const size = `${$("width").value}x${$("height").value}`;
  const known = [...$("size-preset").options].some((o) => o.value === size);
  $("size-preset").value = known ? size : "";
}

function modelPath(modelId) {
  return modelId.split("/").map(encodeURIComponent).join("/");
}

function savedForm() {
  try {
    return JSON.parse(localStorage.getItem(FORM_KEY)) || {};
  } catch {
    return {};
  }
}

export function saveForm() {
  const params = Object.fromEntries(PARAMS.map((id) => [id, $(id).value]));
  localStorage.setItem(
    FORM_KEY,
    JSON.stringify({
      model: $("model").value,
      prompt: $("prompt").value,
      negative_prompt: $("negative_prompt").value,
      randomSeed: $("random-seed").checked,
      num_outputs: $("num_outputs").value,
      params,
    }),
  );
}

// --- errors

export function clearErrors() {
  for (const element of document.querySelectorAll(".error")) {
    element.hidden = true;
    element.textContent = "";
  }
  for (const element of document.querySelectorAll("[aria-invalid]")) {
    element.removeAttribute("aria-invalid");
  }
  clearInterval(state.countdown);
}

export function message(text) {
  $("message").textContent = text;
  $("message").hidden = false;
}

// The form field a server error names ("input.width" → width, "version" → model).
function fieldOf(name) {
  const id = name === "version" ? "model" : name.replace(/^input\./, "");
  return $(`${id}-error`) ? id : null;
}

export function showError(err) {
  if (err.name === "AbortError") return;
  const field = err.status === 400 && err.field ? fieldOf(err.field) : null;
  if (field) {
    $(`${field}-error`).textContent = err.message;
    $(`${field}-error`).hidden = false;
    $(field).setAttribute("aria-invalid", "true");
    $(field).focus();
    return;
  }
  switch (err.status) {
    case 401:
      showTokenForm();
      $("token").focus();
      message(
        token()
          ? `The server refused this token (${err.message}). Check it, type it under Token ` +
              "and press Save token."
          : `This server needs a token (${err.message}). Type one of its tokens under Token ` +
              "and press Save token.",
      );
      return;
    case 404:
      message(`Not found: ${err.message}`);
      return;
    case 429:
      busyFor(err.waitS ?? 1, err.message);
      return;
    case 503:
      message(
        `The server is not ready: ${err.message}.` +
          (err.waitS ? ` Try again in about ${duration(err.waitS)}.` : " Try again shortly."),
      );
      return;
    case 0:
    case 400:
      message(err.message);
      return;
    default:
      message(`The server failed (HTTP ${err.status}): ${err.message}`);
  }
}

function busyFor(seconds, why) {
  const until = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      message(`The server is busy: try again in ${left} s. (${why})`);
    } else {
      message(`The server may have room now: try again. (${why})`);
      clearInterval(state.countdown);
    }
  };
  clearInterval(state.countdown);
  tick();
  state.countdown = setInterval(tick, 1000);
}

export function duration(seconds) {
  if (seconds < 1) return "under a second";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
