// The demo page: an image in (chooser, drop, paste, example), POST /predict with it as base64, the best
// classes out. Plain JavaScript, no dependency; served with a CSP that allows no inline script.
"use strict";

const MAX_RETRIES = 60; // warm-up waits: a worker loading a large model can take minutes

const $ = (id) => document.getElementById(id);
const drop = $("drop"), chooser = $("file"), topK = $("top-k"), preview = $("preview");
const statusLine = $("status"), classes = $("classes"), details = $("details");

let current = 0; // the latest request: answers to older ones are dropped
let retryTimer = null;
let lastImage = null; // re-sent when the number of classes shown changes

function say(text, kind) {
  statusLine.textContent = text;
  statusLine.className = "status" + (kind ? " " + kind : "");
}

function clearAnswer() {
  classes.replaceChildren();
  details.textContent = "";
}

function showPreview(blob) {
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = false;
  preview.src = URL.createObjectURL(blob);
}
preview.addEventListener("error", () => { preview.hidden = true; }); // not an image: the API says why

function base64Of(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function classify(blob) {
  const request = ++current;
  clearTimeout(retryTimer);
  lastImage = blob;
  clearAnswer();
  showPreview(blob);
  say("Sending…", "busy");
  let b64;
  try {
    b64 = await base64Of(blob);
  } catch (error) {
    say("Could not read the file: " + error.message, "error");
    return;
  }
  const body = JSON.stringify({instances: [{b64: b64}], top_k: Number(topK.value)});
  await send(request, body, 0);
}

async function send(request, body, retries) {
  const started = performance.now();
  let response, answer = null;
  try {
    response = await fetch("/predict", {method: "POST", headers: {"Content-Type": "application/json"}, body: body});
    answer = await response.json().catch(() => null);
  } catch (error) {
    if (request === current) say("The server could not be reached: " + error.message, "error");
    return;
  }
  if (request !== current) return;
  const milliseconds = performance.now() - started;
  const wait = Number(response.headers.get("Retry-After"));
  if (response.status === 503 && wait > 0 && retries < MAX_RETRIES) {
    // 503 + Retry-After: a worker still warming up its model, or a moment's overload
    say(`Waiting for the server: ${errorText(response, answer)}. Retrying in ${wait} s…`, "busy");
    retryTimer = setTimeout(() => send(request, body, retries + 1), wait * 1000);
    return;
  }
  if (!response.ok) {
    say(errorText(response, answer), "error");
    return;
  }
  if (!answer || !Array.isArray(answer.top_k)) {
    say("The answer holds no top_k: the model may have no class scores to rank.", "error");
    return;
  }
  show(answer.top_k[0], response.headers, milliseconds);
}

// The API's own words: every error it sends is {"error": "..."}; anything else is named by its status.
function errorText(response, answer) {
  if (answer && typeof answer.error === "string") return answer.error;
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

function show(best, headers, milliseconds) {
  const rows = best.map(({label, score}) => {
    const row = document.createElement("li");
    row.dataset.label = label;
    row.dataset.score = String(score);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label; // labels are data from labels.txt: text, never HTML
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = score.toFixed(3);
    row.append(name, bar, value);
    return row;
  });
  classes.replaceChildren(...rows);
  say(`Best: ${best[0].label} (${best[0].score.toFixed(3)})`, "done");
  const model = headers.get("X-Model-Name"), version = headers.get("X-Model-Version");
  const id = headers.get("X-Request-ID");
  details.textContent = [model && `model ${model}, version ${version}`, `${Math.round(milliseconds)} ms`,
    id && `request ${id}`].filter(Boolean).join(" · ");
}

function firstImage(files) {
  return files && files.length ? files[0] : null;
}

// The drop zone is a button: click, Enter or Space opens the file chooser.
drop.addEventListener("click", () => chooser.click());
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    chooser.click();
  }
});
chooser.addEventListener("change", () => {
  const file = firstImage(chooser.files);
  chooser.value = ""; // choosing the same file again must fire change again
  if (file) classify(file);
});

// A file dropped anywhere else must not make the browser navigate away to it.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
drop.addEventListener("dragover", () => drop.classList.add("over"));
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  drop.classList.remove("over");
  const file = firstImage(event.dataTransfer && event.dataTransfer.files);
  if (file) classify(file);
  else say("Nothing to classify: drop an image file.", "error");
});

document.addEventListener("paste", (event) => {
  const items = event.clipboardData ? Array.from(event.clipboardData.items) : [];
  const item = items.find((entry) => entry.kind === "file");
  if (!item) return; // pasted text goes where it was pasted
  event.preventDefault();
  classify(item.getAsFile());
});

for (const button of document.querySelectorAll(".example")) {
  button.addEventListener("click", async () => {
    try {
      const response = await fetch(button.dataset.src);
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      classify(await response.blob());
    } catch (error) {
      say("Could not load the example: " + error.message, "error");
    }
  });
}

topK.addEventListener("change", () => { if (lastImage) classify(lastImage); });
