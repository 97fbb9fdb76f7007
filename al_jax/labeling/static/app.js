// The labeling page: plain JavaScript, no build step. The server holds the state;
// the page shows it, sends one request per answer (in order) and polls while a
// round trains. window.alLatencies holds, per answer, the milliseconds from the key
// press (or click) to the page showing the server's confirmation.
//
// The token comes from the page's own URL and goes in the X-Token header of every
// request (in the URL for images): there is no cookie, which another web server on
// this machine could read. When the server stops the page says so and retries; when
// it answers again (label.py started again: same token, and the same port when free)
// the page continues.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
let state = null;          // the last state from the server
let cursor = 0;            // position in state.batch of the highlighted image
let batchKey = "";         // the batch the grid was built for
let queue = Promise.resolve();
let inFlight = 0;
let polling = null;
let connection = "ok";     // "ok", "lost" (no answer) or "refused" (token not accepted)
let retrying = null;
let notice = null;         // a line shown under the status: {text, error}
let serverStarted = null;  // when the server that answered last started
window.alLatencies = [];

const $ = (id) => document.getElementById(id);

class Lost extends Error {}      // no answer: the server stopped or is restarting
class Refused extends Error {}   // the server does not accept this page's token

async function api(path, body) {
  const headers = {"X-Token": TOKEN};
  const init = body === undefined ? {headers} : {
    method: "POST", headers: {...headers, "Content-Type": "application/json"},
    body: JSON.stringify(body)};
  let response;
  try {
    response = await fetch(path, {...init, credentials: "omit", cache: "no-store"});
  } catch (e) {
    throw new Lost("the server does not answer");
  }
  let data = {};
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 403 && /token/.test(data.error || "")) throw new Refused(data.error);
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

// Requests run one after another, in the order given; none is sent once the
// connection is lost (the page shows the server's state again when it is back).
function enqueue(work) {
  inFlight += 1;
  queue = queue.then(() => {
    if (connection !== "ok") throw new Lost("the server does not answer");
    return work();
  }).catch(failed).finally(() => { inFlight -= 1; });
  return queue;
}

function failed(e) {
  if (e instanceof Lost) lost();
  else if (e instanceof Refused) refused();
  else showError(e.message);
}

function showError(message) {
  notice = {text: message, error: true};
  refresh();
}

// The server stopped answering: answers not confirmed are shown open again, and the
// page asks every 2 s until it answers.
function lost() {
  if (connection === "refused") return;
  connection = "lost";
  if (state) {
    state.batch.forEach((b) => {
      if (b.pending) { b.pending = false; b.answered = false; b.label = null; }
    });
  }
  if (state) render();
  else $("status").textContent = "The server does not answer: is label.py running?";
  if (!retrying) retrying = setTimeout(reconnect, 2000);
}

function refused() {
  connection = "refused";
  render();
}

async function reconnect() {
  retrying = null;
  try {
    const next = await api("/api/state");
    connection = "ok";
    batchKey = "";  // reload the images
    setState(next);
  } catch (e) {
    if (e instanceof Refused) refused();
    else retrying = setTimeout(reconnect, 2000);
  }
}

function firstOpen(from) {
  const batch = state ? state.batch : [];
  for (let k = 0; k < batch.length; k++) {
    const i = (from + k) % batch.length;
    if (!batch[i].answered) return i;
  }
  return Math.min(from, Math.max(batch.length - 1, 0));
}

function setState(next, opts = {}) {
  if (serverStarted !== null && next.server_started !== serverStarted) {
    notice = {text: "label.py was restarted; every label it had confirmed is kept. " +
                    "Continue labeling.", error: false};
  }
  serverStarted = next.server_started;
  const newBatch = next.batch.map((b) => b.index).join(",") + "@" + next.round;
  if (newBatch !== batchKey) cursor = 0;
  state = next;
  if (opts.cursorIndex !== undefined) {
    const at = state.batch.findIndex((b) => b.index === opts.cursorIndex);
    if (at >= 0) cursor = at;
  } else if (!state.batch[cursor] || state.batch[cursor].answered) {
    cursor = firstOpen(cursor);
  }
  render();
  if (state.training && !polling) polling = setTimeout(poll, 400);
}

async function refresh() {
  try {
    setState(await api("/api/state"));
  } catch (e) {
    if (e instanceof Lost || e instanceof Refused) failed(e);
    else { notice = {text: e.message, error: true}; render(); }
  }
}

async function poll() {
  polling = null;
  if (connection !== "ok") return;
  if (inFlight === 0) await refresh();
  else if (state && state.training) polling = setTimeout(poll, 400);
}

function answer(label) {
  if (!state || state.training || connection !== "ok" || !state.batch[cursor]) return;
  notice = null;
  const t0 = performance.now();
  const item = state.batch[cursor];
  item.answered = true; item.label = label; item.pending = true;
  const index = item.index;
  cursor = firstOpen(cursor + 1);
  render();
  enqueue(async () => {
    const next = await api(label === null ? "/api/skip" : "/api/label",
                           label === null ? {index} : {index, label});
    if (inFlight === 1) setState(next);
    else item.pending = false;
    window.alLatencies.push(performance.now() - t0);
  });
}

// Enter: the current image is what the model guesses.
function acceptGuess() {
  const item = state && state.batch[cursor];
  if (item && item.guess && !item.answered) answer(item.guess.label);
}

function undo() {
  if (!state || state.training || connection !== "ok") return;
  notice = null;
  enqueue(async () => {
    const next = await api("/api/undo", {});
    setState(next, next.undone === null ? {} : {cursorIndex: next.undone});
  });
}

// ------------------------------------------------------------ earlier answers

async function loadEarlier() {
  if (!$("earlier").open || !state) return;
  let data;
  try { data = await api("/api/answers"); } catch (e) { failed(e); return; }
  const box = $("earlier-list");
  box.replaceChildren();
  if (!data.answers.length) box.textContent = "No answers of earlier batches yet.";
  for (const a of data.answers) {
    const row = document.createElement("div");
    row.className = "earlier";
    row.dataset.index = a.index;
    row.dataset.label = a.label === null ? "" : a.label;
    const img = document.createElement("img");
    img.alt = `image ${a.index}`;
    img.loading = "lazy";
    img.src = `/image/${a.index}?token=${encodeURIComponent(TOKEN)}`;
    const select = document.createElement("select");
    select.setAttribute("aria-label", `answer to image ${a.index}`);
    for (const name of state.classes) select.append(new Option(name, name));
    select.append(new Option("skipped", ""));
    select.value = row.dataset.label;
    select.disabled = state.training || connection !== "ok";
    select.addEventListener("change", () => correct(row, select));
    const when = document.createElement("span");
    when.className = "note";
    when.textContent = `round ${a.round + 1}`;
    row.append(img, select, when);
    box.append(row);
  }
}

function correct(row, select) {
  const index = Number(row.dataset.index);
  const label = select.value === "" ? null : select.value;
  row.classList.add("pending");
  enqueue(async () => {
    try {
      const next = await api("/api/correct", {index, label});
      row.dataset.label = select.value;
      setState(next);
    } catch (e) {
      select.value = row.dataset.label;
      throw e;
    } finally {
      row.classList.remove("pending");
    }
  });
}

function move(step) {
  if (!state || !state.batch.length) return;
  cursor = (cursor + step + state.batch.length) % state.batch.length;
  render();
}

async function exportLabels() {
  try {
    const out = await api("/api/export", {});
    $("exported").textContent = `Wrote ${out.count} rows to ${out.csv} and ${out.json}.`;
  } catch (e) { failed(e); }
}

// ------------------------------------------------------------------------ drawing

function buildGrid() {
  const grid = $("grid");
  grid.replaceChildren();
  const heldOut = new Set(state.held_out_in_batch || []);
  state.batch.forEach((b, i) => {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.index = b.index;
    const img = document.createElement("img");
    img.alt = `image ${b.index}`;
    img.addEventListener("error", () => imageFailed(tile, b.index));
    img.src = `/image/${b.index}?token=${encodeURIComponent(TOKEN)}`;
    const problem = document.createElement("p");
    problem.className = "problem";
    const caption = document.createElement("figcaption");
    tile.append(img, problem, caption);
    if (heldOut.has(b.index)) {
      tile.classList.add("held-out");
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "held out";
      tag.title = "Never trained on: it tests the model.";
      tile.append(tag);
    }
    tile.addEventListener("click", () => { cursor = i; render(); });
    grid.append(tile);
  });
  grid.scrollTop = 0;  // a new batch opens at its first row
}

// An image that does not load: the server's reason (moved or changed file) on the tile.
async function imageFailed(tile, index) {
  tile.classList.add("broken");
  let message = "This image cannot be shown.";
  try { await api(`/image/${index}`); } catch (e) {
    if (!(e instanceof Lost || e instanceof Refused)) message = e.message;
  }
  tile.querySelector(".problem").textContent = message;
}

function buildClasses() {
  const box = $("classes");
  if (box.childElementCount === state.classes.length) return;
  box.replaceChildren();
  state.classes.forEach((name, k) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.label = name;
    const key = document.createElement("kbd");
    key.textContent = state.keys[k];
    button.append(key, " " + name);
    button.addEventListener("click", () => answer(name));
    box.append(button);
  });
}

function render() {
  if (!state) return;
  const key = state.batch.map((b) => b.index).join(",") + "@" + state.round;
  if (key !== batchKey) { batchKey = key; buildGrid(); loadEarlier(); }
  buildClasses();
  const answered = state.batch.filter((b) => b.answered).length;
  const p = state.progress;
  $("round").textContent = state.round + 1;
  $("in-batch").textContent = `${answered} / ${state.batch.length}`;
  $("labeled").textContent = p.labeled;
  $("trained").textContent = p.trained;
  $("held-out").textContent = p.held_out;
  $("skipped").textContent = p.skipped;
  $("unlabeled").textContent = p.unlabeled;
  $("pool").textContent = p.pool;
  $("metric").textContent = state.metric;
  $("model").textContent = state.model;
  $("where").textContent = `Every label is saved the moment it is given, in ` +
      `${state.workdir}/labels.sqlite; the export writes labels.csv and labels.json there.`;
  const waiting = state.training || connection !== "ok";
  const tiles = $("grid").children;
  state.batch.forEach((b, i) => {
    const tile = tiles[i];
    tile.classList.toggle("current", i === cursor && !waiting);
    tile.classList.toggle("answered", b.answered);
    tile.classList.toggle("skipped", b.answered && b.label === null);
    tile.classList.toggle("pending", !!b.pending);
    tile.dataset.label = b.answered ? (b.label === null ? "" : b.label) : "";
    tile.dataset.answered = b.answered;
    const guess = b.answered ? null : b.guess;  // the latest model's class, once there is one
    tile.classList.toggle("guessed", !!guess);
    tile.dataset.guess = guess ? guess.label : "";
    tile.querySelector("figcaption").textContent =
        b.answered ? (b.label === null ? "skipped" : b.label) :
        guess ? `guess: ${guess.label} ${Math.round(guess.probability * 100)}%` : "";
  });
  const now = state.batch[cursor];
  $("accept").hidden = !(now && now.guess);
  $("accept").disabled = waiting || !now || !now.guess || now.answered;
  const current = tiles[cursor];
  if (current && !waiting) current.scrollIntoView({block: "nearest"});
  $("grid").classList.toggle("waiting", waiting);
  document.querySelectorAll("#earlier-list select").forEach((b) => { b.disabled = waiting; });
  document.querySelectorAll("aside button").forEach((b) => {
    b.disabled = b.id === "export" ? connection !== "ok" : waiting;
  });
  renderUnreadable();
  renderStatus();
  renderCurve();
  renderCounts();
}

function renderUnreadable() {
  // The image files label.py left out at the start because they do not decode.
  const u = state.unreadable, box = $("unreadable");
  box.hidden = !u || !u.count;
  if (box.hidden) return;
  const names = u.files.map((f) => `${f.path} (${f.why})`).join(", ");
  const more = u.count > u.files.length ? ` and ${u.count - u.files.length} more` : "";
  box.textContent = `Left out, as they do not decode: ${u.count} image ` +
      `file${u.count === 1 ? "" : "s"}: ${names}${more}. A workdir keeps the images it ` +
      "started with: fixed files join only in a new --workdir.";
}

function renderStatus() {
  const status = $("status");
  status.dataset.training = state.training && connection === "ok";
  status.dataset.connection = connection;
  status.className = "";
  status.replaceChildren();
  if (connection === "lost") {
    status.className = "error";
    status.textContent = "The server does not answer: label.py stopped or is restarting. " +
        `Every label it confirmed is saved in ${state.workdir}/labels.sqlite. Start ` +
        "label.py again with the same command: this page reconnects by itself (if it " +
        "prints another address, open that one).";
    return;
  }
  if (connection === "refused") {
    status.className = "error";
    status.textContent = "The server at this address does not accept this page's link " +
        "(another label.py runs there now): open the URL that label.py printed last.";
    return;
  }
  const p = state.progress;
  if (state.training) {
    const spin = document.createElement("span");
    spin.className = "spinner";
    const last = state.last_round_s ? ` (the last round took ${state.last_round_s.toFixed(1)} s)`
                                    : " (the first round also compiles the model)";
    status.append(spin, `Training on ${p.trained} labels (${p.held_out} held out test it) ` +
                        `and choosing the next batch… ${state.training_s.toFixed(0)} s${last}`);
  } else if (state.error) {
    status.className = "error";
    status.textContent = `The round failed: ${state.error}. Restart label.py to retry.`;
  } else if (state.done) {
    status.textContent = "Every image is labeled or skipped. Export, then stop the server.";
  } else {
    status.textContent = "Label the highlighted image; the next batch comes when this one is done.";
  }
  if (notice) {
    const line = document.createElement("span");
    line.className = notice.error ? "notice error" : "notice";
    line.textContent = " " + notice.text;
    status.append(line);
  }
}

function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderCurve() {
  const box = $("curve");
  box.replaceChildren();
  const [x0, x1, y0, y1] = [34, 290, 150, 12];
  box.append(svg("line", {class: "axis", x1: x0, y1: y0, x2: x1, y2: y0}),
             svg("line", {class: "axis", x1: x0, y1: y0, x2: x0, y2: y1}));
  for (const v of [0, 0.5, 1]) {
    const y = y0 - v * (y0 - y1);
    box.append(svg("text", {x: 4, y: y + 3}, `${v * 100}%`));
  }
  const curve = state.curve;
  const maxX = Math.max(1, ...curve.map((c) => c.num_labeled));
  const px = (c) => x0 + (c.num_labeled / maxX) * (x1 - x0 - 8);
  box.append(svg("text", {x: x1 - 110, y: 166}, `trained labels (max ${maxX})`));
  const line = (key, cls) => {
    const pts = curve.filter((c) => c[key] !== null && c[key] !== undefined);
    if (!pts.length) return;
    box.append(svg("polyline", {class: cls,
        points: pts.map((c) => `${px(c)},${y0 - c[key] * (y0 - y1)}`).join(" ")}));
    pts.forEach((c) => box.append(svg("circle", {cx: px(c), cy: y0 - c[key] * (y0 - y1), r: 3,
        fill: cls === "est" ? "#1f6feb" : "#1a7f37"})));
  };
  line("estimated_accuracy", "est");
  if (state.simulation) line("true_accuracy", "true");
  const last = curve[curve.length - 1];
  let note = "No round trained yet.";
  if (last) {
    const acc = last.estimated_accuracy === null ? "–" : `${(last.estimated_accuracy * 100).toFixed(0)}%`;
    note = `Round ${last.round + 1}: ${acc} on ${last.validation_labeled} held-out labels ` +
           "(random images of the first batch, never trained on).";
    if (state.simulation && last.true_accuracy !== null) {
      note += ` True accuracy (hidden folder labels, dashed): ${(last.true_accuracy * 100).toFixed(0)}%.`;
    }
  }
  $("curve-note").textContent = note;
}

function renderCounts() {
  const table = $("counts");
  table.replaceChildren();
  const max = Math.max(1, ...Object.values(state.class_counts));
  for (const [name, n] of Object.entries(state.class_counts)) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    const count = row.insertCell();
    count.className = "n";
    count.textContent = n;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * n) / max}%`;
    row.insertCell().append(bar);
  }
}

// ------------------------------------------------------------------------ keyboard

document.addEventListener("keydown", (e) => {
  if (!state || e.altKey || e.metaKey) return;
  if (e.ctrlKey) {
    if (e.key === "z") { e.preventDefault(); undo(); }
    return;
  }
  if (e.target instanceof HTMLSelectElement) return;  // changing an earlier answer
  if ((e.target instanceof HTMLButtonElement || e.target.tagName === "SUMMARY") &&
      (e.key === "Enter" || e.key === " ")) return;
  const key = e.key.toLowerCase();
  const k = state.keys.indexOf(key);
  if (k >= 0) { e.preventDefault(); answer(state.classes[k]); }
  else if (key === "0") { e.preventDefault(); answer(null); }
  else if (e.key === "Enter") { e.preventDefault(); acceptGuess(); }
  else if (e.key === "Backspace") { e.preventDefault(); undo(); }
  else if (e.key === "ArrowRight") { e.preventDefault(); move(1); }
  else if (e.key === "ArrowLeft") { e.preventDefault(); move(-1); }
});

document.addEventListener("DOMContentLoaded", () => {
  $("skip").addEventListener("click", () => answer(null));
  $("undo").addEventListener("click", undo);
  $("accept").addEventListener("click", acceptGuess);
  $("earlier").addEventListener("toggle", loadEarlier);
  $("export").addEventListener("click", exportLabels);
  refresh();
});
