// The gallery of what this browser made (newest first, from store.js), and the viewer: a larger
// view, the parameters, "Use these settings", a download named with the seed, delete.

import {
  $,
  PARAMS,
  clearErrors,
  duration,
  loadInfo,
  message,
  saveForm,
  state,
  syncPreset,
} from "./form.js";
import * as store from "./store.js";

const ENDED = new Set(["failed", "canceled"]);

export async function renderGallery() {
  const tiles = [];
  for (const item of await store.all()) {
    if (item.status === "succeeded") {
      item.images.forEach((blob, index) => tiles.push(tile(item, index, blob)));
    } else if (ENDED.has(item.status)) {
      tiles.push(ended(item));
    }
  }
  $("gallery").replaceChildren(...tiles);
  $("gallery-empty").hidden = tiles.length > 0;
}

function imageUrl(item, index, blob) {
  const key = `${item.id}/${index}`;
  if (!state.urls.has(key)) state.urls.set(key, URL.createObjectURL(blob));
  return state.urls.get(key);
}

function describe(item, index) {
  return `${item.params.prompt} (seed ${item.seeds[index]})`;
}

// A kept image as a button that opens the viewer.
export function thumb(item, index, blob) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  const img = document.createElement("img");
  img.src = imageUrl(item, index, blob);
  img.alt = describe(item, index);
  img.width = item.params.width;
  img.height = item.params.height;
  button.append(img);
  button.addEventListener("click", () => openViewer(item, index));
  return button;
}

function tile(item, index, blob) {
  const li = document.createElement("li");
  const button = thumb(item, index, blob);
  const caption = document.createElement("span");
  caption.className = "caption";
  const { width, height } = item.params;
  caption.textContent = `${width} × ${height} · seed ${item.seeds[index]}`;
  li.append(button, caption);
  return li;
}

function ended(item) {
  const li = document.createElement("li");
  li.className = "ended";
  const word = document.createElement("strong");
  word.textContent = item.status; // "canceled" or "failed"
  const prompt = document.createElement("span");
  prompt.textContent = item.params.prompt;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove the ${item.status} job “${item.params.prompt}”`);
  remove.addEventListener("click", async () => {
    await store.remove(item.id);
    await renderGallery();
  });
  li.title = item.error || "";
  li.append(word, prompt, document.createElement("br"), remove);
  return li;
}

function openViewer(item, index) {
  state.viewing = { item, index };
  const p = item.params;
  const blob = item.images[index];
  const url = imageUrl(item, index, blob);
  $("viewer-title").textContent = p.prompt;
  $("viewer-image").src = url;
  $("viewer-image").alt = describe(item, index);
  const rows = [
    ["Model", p.model],
    ["Prompt", p.prompt],
    ["Negative prompt", p.negative_prompt || "none"],
    ["Size", `${p.width} × ${p.height}`],
    ["Steps", p.num_inference_steps],
    ["Guidance", p.guidance_scale],
    ["Scheduler", p.scheduler],
    ["Seed", item.seeds[index]],
    ["Made", new Date(item.created).toLocaleString()],
  ];
  if (item.metrics?.predict_time != null) rows.push(["Took", duration(item.metrics.predict_time)]);
  $("viewer-params").replaceChildren(
    ...rows.flatMap(([name, text]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = text;
      return [dt, dd];
    }),
  );
  const ext = { "image/jpeg": "jpg", "image/webp": "webp" }[blob.type] || "png";
  $("download").href = url;
  $("download").download = `imagine-${p.model.split("/").pop()}-${item.seeds[index]}.${ext}`;
  $("viewer").showModal();
}

export async function useSettings() {
  const { item, index } = state.viewing;
  const p = item.params;
  $("viewer").close();
  clearErrors();
  if ($("model").value !== p.model) {
    if (![...$("model").options].some((o) => o.value === p.model)) {
      message(`Model ${p.model} is not offered by this server any more.`);
      return;
    }
    $("model").value = p.model;
    await loadInfo(p.model, null);
  }
  $("prompt").value = p.prompt;
  $("negative_prompt").value = p.negative_prompt || "";
  for (const id of PARAMS) $(id).value = p[id];
  $("seed").value = item.seeds[index];
  $("random-seed").checked = false;
  $("num_outputs").value = "1";
  if (!$("scheduler").value) $("scheduler").value = state.info.defaults.scheduler;
  syncPreset();
  saveForm();
  $("prompt").focus();
}

export async function deleteViewed() {
  const { item, index } = state.viewing;
  $("viewer").close();
  item.images.splice(index, 1);
  item.seeds.splice(index, 1);
  for (const url of state.urls.values()) URL.revokeObjectURL(url);
  state.urls.clear(); // indexes moved: rebuild them
  $("latest").replaceChildren();
  if (item.images.length) await store.put(item);
  else await store.remove(item.id);
  await renderGallery();
}
