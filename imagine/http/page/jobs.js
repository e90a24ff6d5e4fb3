// Jobs: Generate creates one through the job API (POST v1/predictions), the page follows it on
// its event stream (queue position, steps, ETA, live previews; polling if the stream breaks),
// Cancel stops it, and its images are kept in this browser when it ends.

import { ApiError, events, json, local, request } from "./api.js";
import { renderGallery, thumb } from "./gallery.js";
import { $, clearErrors, duration, message, saveForm, showError, state } from "./form.js";
import * as store from "./store.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

// A number field's value; what is not a number goes to the server as typed, so that its
// message (naming the field) is the one shown.
function value(id) {
  const input = $(id);
  return input.value === "" || Number.isNaN(input.valueAsNumber)
    ? input.value
    : input.valueAsNumber;
}

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

export async function generate() {
  if (state.job || !state.info) return;
  clearErrors();
  let seed = value("seed");
  if ($("random-seed").checked || seed === "") {
    seed = randomSeed();
    $("seed").value = seed;
  }
  const count = Number($("num_outputs").value) || 1;
  const input = {
    prompt: $("prompt").value,
    width: value("width"),
    height: value("height"),
    num_inference_steps: value("num_inference_steps"),
    guidance_scale: value("guidance_scale"),
    scheduler: $("scheduler").value,
    seed,
    num_outputs: count,
  };
  if ($("negative_prompt").value.trim()) input.negative_prompt = $("negative_prompt").value;
  const model = $("model").value;
  saveForm();
  setBusy(true);
  let prediction;
  try {
    prediction = await json("v1/predictions", { method: "POST", body: { version: model, input } });
  } catch (err) {
    setBusy(false);
    showError(err);
    return;
  }
  // Images of one job have consecutive seeds (the job API's rule), so each one's is known.
  const seeds = Array.from({ length: count }, (_, i) => seed + i);
  const item = {
    id: prediction.id,
    created: Date.now(),
    status: prediction.status,
    params: { model, ...input },
    seeds,
    images: [],
    metrics: null,
    error: null,
  };
  await store.put(item);
  await follow(item);
}

// Follow one job to its end: its events while the stream lasts, then polling if it broke.
async function follow(item) {
  state.job = item;
  setBusy(true);
  $("run").hidden = false;
  $("progress").max = item.params.num_inference_steps || 1;
  $("progress").value = 0;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("latest").replaceChildren();
  $("job-status").textContent = "Submitted…";
  $("run").scrollIntoView({ block: "nearest" }); // on a phone the form fills the screen
  let final = null;
  try {
    final = (await watch(item)) ?? (await poll(item.id));
  } catch (err) {
    if (!(err instanceof ApiError) || ![404, 410].includes(err.status)) {
      // Not this job's fault (no token, no server): leave it for the next visit.
      showError(err);
      $("job-status").textContent = "Not followed: see the message above.";
      state.job = null;
      setBusy(false);
      return;
    }
    final = { status: "failed", error: err.message };
  }
  await settle(item, final);
}

async function watch(item) {
  try {
    for await (const event of events(`v1/predictions/${item.id}/events`)) {
      const data = JSON.parse(event.data);
      if (event.type === "status") showStatus(data);
      else if (event.type === "preview") showPreview(item, data);
      else if (event.type === "done") return data;
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    // The stream broke mid-way (a network hiccup): poll instead.
  }
  return null;
}

async function poll(id) {
  let failures = 0;
  for (;;) {
    try {
      const prediction = await json(`v1/predictions/${id}`);
      if (TERMINAL.has(prediction.status)) return prediction;
      showStatus(prediction);
      failures = 0;
    } catch (err) {
      if (err.status !== 0 || ++failures > 10) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function showStatus(s) {
  const progress = $("progress");
  const eta = s.eta_s != null ? ` · about ${duration(s.eta_s)} left` : "";
  if (s.status === "starting") {
    progress.value = 0;
    $("job-status").textContent = s.queue_position
      ? `Queued: position ${s.queue_position}${eta}`
      : `Starting…${eta}`;
  } else if (s.status === "processing" && s.progress) {
    progress.max = s.progress.total;
    progress.value = s.progress.step;
    $("job-status").textContent = `Step ${s.progress.step} of ${s.progress.total}${eta}`;
  } else if (s.status === "processing") {
    $("job-status").textContent = `Running${eta}`;
  }
}

function showPreview(item, p) {
  const preview = $("preview");
  preview.src = p.image;
  preview.alt = `Live preview of “${item.params.prompt}” at step ${p.step}`;
  preview.hidden = false;
}

async function settle(item, final) {
  item.status = final.status;
  item.metrics = final.metrics || null;
  if (final.status === "succeeded") {
    try {
      const urls = Array.isArray(final.output) ? final.output : [final.output];
      item.images = await Promise.all(
        urls.map(async (url) => (await request(local(url), { accept: "image/*" })).blob()),
      );
      const took = final.metrics?.predict_time;
      $("job-status").textContent =
        `Done: ${urls.length} ${urls.length === 1 ? "image" : "images"}` +
        (took != null ? ` in ${duration(took)}` : "");
      $("progress").value = $("progress").max;
      $("latest").replaceChildren(...item.images.map((blob, i) => thumb(item, i, blob)));
    } catch (err) {
      item.status = "failed";
      item.error = `The images could not be fetched: ${err.message}`;
    }
  } else if (final.status === "canceled") {
    $("job-status").textContent = "Job canceled.";
  } else {
    item.error = final.error || "The job failed.";
  }
  if (item.status === "failed") {
    $("job-status").textContent = "Job failed.";
    message(`The job failed: ${item.error}`);
  }
  $("preview").hidden = true;
  await store.put(item);
  await store.prune();
  state.job = null;
  setBusy(false);
  await renderGallery();
}

export async function cancel() {
  const job = state.job;
  if (!job) return;
  $("cancel").disabled = true;
  $("job-status").textContent = "Canceling…";
  try {
    await json(`v1/predictions/${job.id}/cancel`, { method: "POST" });
  } catch (err) {
    showError(err);
    $("cancel").disabled = state.job === null;
  }
}

// A reload while a job ran: follow the ones this browser started and has not seen end.
export async function resume() {
  if (state.job) return; // already following one (a token saved mid-job)
  const pending = (await store.all()).filter((item) => !TERMINAL.has(item.status));
  for (const item of pending.reverse()) await follow(item);
}

function setBusy(busy) {
  $("generate").disabled = busy || state.info === null;
  $("cancel").disabled = !busy;
}
