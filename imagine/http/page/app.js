// imagine's page: pick a model, type a prompt, watch the job draw, keep what it made.
//
// Everything it offers comes from the server: the models from GET models, every default, range
// and choice of a model from GET models/{id}/info (form.js). Generate runs a job through the
// job API and follows its progress and previews (jobs.js); finished images are kept in this
// browser (gallery.js, store.js). Plain ES modules: no build step, nothing from another origin.

import { json, setToken } from "./api.js";
import { $, loadInfo, loadModels, saveForm, showTokenForm, state, syncPreset } from "./form.js";
import { deleteViewed, renderGallery, useSettings } from "./gallery.js";
import { cancel, generate, resume } from "./jobs.js";

start();

async function start() {
  wire();
  await renderGallery();
  const health = await json("health").catch(() => null);
  if (health?.auth) showTokenForm();
  if (await loadModels()) await resume();
}

function wire() {
  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("generate-form").requestSubmit();
    }
  });
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.job && !$("viewer").open) cancel();
  });
  $("model").addEventListener("change", async () => {
    await loadInfo($("model").value, null);
    saveForm();
  });
  $("size-preset").addEventListener("change", () => {
    const [width, height] = $("size-preset").value.split("x");
    if (width) {
      $("width").value = width;
      $("height").value = height;
    }
    saveForm();
  });
  for (const id of ["width", "height"]) $(id).addEventListener("input", syncPreset);
  $("seed").addEventListener("input", () => {
    $("random-seed").checked = false;
  });
  $("generate-form").addEventListener("change", saveForm);
  $("generate-form").addEventListener("input", saveForm);
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    if (await loadModels()) await resume();
  });
  $("use-settings").addEventListener("click", useSettings);
  $("delete").addEventListener("click", deleteViewed);
  $("close-viewer").addEventListener("click", () => $("viewer").close());
}
