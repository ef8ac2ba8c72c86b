// The dashboard page: sign in with a token, list and open the teacher's batches, submit new ones,
// and keep what is shown current from the live feed (a frame about a batch re-fetches that batch).

import { Api, ApiError } from "./api.js";
import { LiveFeed } from "./live.js";
import { submissionBody } from "./submit.js";
import { claims, forgetToken, storedToken, storeToken, tokenFromLink } from "./token.js";
import {
  $,
  clearBatch,
  element,
  hideEvidence,
  renderBatch,
  renderBatchList,
  renderEvidence,
  renderSubmitted,
  renderTimeline,
} from "./view.js";

const REGISTRATION_WAITS_MS = [200, 400, 800, 1600, 3200]; // RAS learns of a new batch from an event
const REFRESH_DELAY_MS = 50; // frames of one burst (a replay) cause one fetch per batch
const MAX_TIMER_MS = 2 ** 31 - 1;

const state = {
  api: null,
  feed: null,
  user: null,
  batches: [],
  submitted: new Map(), // batch_id -> {title, count}: accepted, not yet known to the results service
  openId: null,
  shown: null, // the open batch's last document, to redraw the chart when the width changes
  tally: null, // the open batch's wins and losses per essay (null: no comparisons to show)
  expanded: new Set(), // essays of the open batch whose comparisons are shown
  dirty: new Set(),
  listDirty: false,
  refreshTimer: null,
  expiryTimer: null,
};

// --- signing in and out ---

async function signIn(token, { fromForm = false } = {}) {
  const error = $("#sign-in-error");
  error.textContent = "";
  const payload = claims(token);
  if (!payload || typeof payload.sub !== "string") {
    error.textContent = "That is not a token: paste the whole text printed by `huleedu token`.";
    forgetToken();
    showSignIn();
    return false;
  }
  if (typeof payload.exp === "number" && payload.exp * 1000 <= Date.now()) {
    error.textContent = "That token has expired. Ask for a new one.";
    forgetToken();
    showSignIn();
    return false;
  }
  const api = new Api(token);
  let listing;
  try {
    listing = await api.listBatches();
  } catch (failure) {
    error.textContent =
      failure instanceof ApiError && failure.status === 401
        ? `The server refused this token: ${failure.message}`
        : `Cannot sign in: ${failure.message}`;
    forgetToken();
    showSignIn();
    return false;
  }
  storeToken(token);
  state.api = api;
  state.user = payload.sub;
  state.batches = listing.batches || [];
  $("#who").textContent = `Signed in as ${payload.sub}`;
  $("#account").hidden = false;
  $("#sign-in").hidden = true;
  $("#workspace").hidden = false;
  if (fromForm) $("#token").value = "";
  renderList();
  state.feed = new LiveFeed(token, {
    onFrame: (_event, data) => batchChanged(data.batch_id || (data.payload && data.payload.batch_id)),
    onReload: () => reloadEverything(),
    onState: showLiveState,
    onRefused: (reason) => signOut(`Signed out: ${reason}.`),
  });
  state.feed.start();
  if (typeof payload.exp === "number") {
    const left = payload.exp * 1000 - Date.now();
    if (left < MAX_TIMER_MS) state.expiryTimer = setTimeout(() => signOut("Your token has expired; sign in again."), left);
  }
  const linked = new URLSearchParams(location.search).get("batch");
  if (linked) openBatch(linked, { focus: false });
  return true;
}

function showSignIn() {
  $("#sign-in").hidden = false;
  $("#workspace").hidden = true;
  $("#account").hidden = true;
}

function signOut(message = "") {
  if (state.feed) state.feed.stop();
  clearTimeout(state.expiryTimer);
  clearTimeout(state.refreshTimer);
  forgetToken();
  Object.assign(state, { api: null, feed: null, user: null, batches: [], openId: null, shown: null, tally: null });
  state.expanded.clear();
  state.submitted.clear();
  state.dirty.clear();
  $("#batches").replaceChildren();
  $("#batch").hidden = true;
  showSignIn();
  $("#sign-in-error").textContent = message;
  $("#token").focus();
}

function showLiveState(live) {
  const indicator = $("#live");
  indicator.dataset.state = live;
  indicator.textContent = { live: "Live", connecting: "Connecting…", offline: "Offline" }[live] || live;
}

// --- the list of batches ---

function renderList() {
  const known = new Set(state.batches.map((batch) => batch.batch_id));
  const waiting = [...state.submitted.entries()]
    .filter(([id]) => !known.has(id))
    .map(([id, local]) => ({
      batch_id: id,
      title: local.title,
      overall_status: "submitted",
      essay_count: local.count,
      completed_essay_count: 0,
      failed_essay_count: 0,
      created_at: local.at,
    }));
  renderBatchList([...waiting, ...state.batches], state.openId, (batchId) => openBatch(batchId, { focus: true }));
}

async function reloadList() {
  if (!state.api) return;
  try {
    const listing = await state.api.listBatches();
    state.batches = listing.batches || [];
    for (const batch of state.batches) state.submitted.delete(batch.batch_id);
    $("#batches-error").textContent = "";
    renderList();
  } catch (failure) {
    handleFailure(failure, "#batches-error");
  }
}

function handleFailure(failure, where) {
  if (failure instanceof ApiError && failure.status === 401) {
    signOut(`Signed out: ${failure.message}.`);
    return;
  }
  $(where).textContent = failure.message;
}

// --- one batch ---

function openBatch(batchId, { focus }) {
  if (state.openId !== batchId) {
    state.shown = null;
    state.tally = null;
    state.expanded.clear();
    clearBatch();
  }
  state.openId = batchId;
  const url = new URL(location.href);
  url.searchParams.set("batch", batchId);
  history.replaceState(null, "", url);
  renderList();
  const section = $("#batch");
  section.hidden = false;
  section.dataset.batchId = batchId;
  loadBatch(batchId).then(() => {
    if (focus) $("#batch-title").focus();
  });
}

async function loadBatch(batchId) {
  if (!state.api) return;
  try {
    const batch = await state.api.getBatch(batchId);
    const tally = await comparisonTally(batch);
    state.submitted.delete(batchId);
    if (state.openId === batchId) {
      state.shown = batch;
      state.tally = tally;
      renderBatch(batch, tally);
      for (const essayId of state.expanded) showEvidence(essayId);
      if ($("#timeline").open) showTimeline();
    }
    $("#batch-error").textContent = "";
  } catch (failure) {
    if (state.openId !== batchId) return;
    if (failure instanceof ApiError && failure.status === 404 && state.submitted.has(batchId)) {
      renderSubmitted(batchId, state.submitted.get(batchId));
      return;
    }
    if (failure instanceof ApiError && failure.status === 404) {
      state.shown = null;
      clearBatch();
      $("#batch-title").textContent = "Batch not found";
      $("#batch-error").textContent = "Batch not found: none of your batches has this id.";
      return;
    }
    handleFailure(failure, "#batch-error");
  }
}

// --- the evidence behind the grades ---

// Wins and losses per essay once comparative judgement has begun (null before, or if it cannot be
// had: the table is shown without them).
async function comparisonTally(batch) {
  const cj = batch.phase_results && batch.phase_results.cj_assessment;
  if (!cj || cj.status === "pending") return null;
  try {
    return await state.api.comparisonTally(batch.batch_id);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) throw failure;
    return null;
  }
}

// An opponent that is not one of the batch's essays is one of its graded anchors.
function nameOf(essayId) {
  const essay = state.shown && state.shown.essays.find((e) => e.essay_id === essayId);
  if (!essay) return `an anchor essay (${essayId.slice(0, 8)})`;
  return essay.filename || essayId;
}

async function showEvidence(essayId) {
  const batchId = state.openId;
  try {
    const evidence = await state.api.essayComparisons(batchId, essayId);
    if (state.openId === batchId && state.expanded.has(essayId)) renderEvidence(essayId, evidence, nameOf);
  } catch (failure) {
    handleFailure(failure, "#batch-error");
  }
}

function toggleEvidence(event) {
  const toggle = event.target.closest(".evidence-toggle");
  if (!toggle) return;
  const essayId = toggle.dataset.essayId;
  if (state.expanded.has(essayId)) {
    state.expanded.delete(essayId);
    hideEvidence(essayId);
  } else {
    state.expanded.add(essayId);
    showEvidence(essayId);
  }
}

// --- the timeline of the open batch (fetched when opened, and again on each change while open) ---

async function showTimeline() {
  const batchId = state.openId;
  if (!state.api || !batchId || !$("#timeline").open) return;
  try {
    const timeline = await state.api.timeline(batchId);
    if (state.openId === batchId && $("#timeline").open) renderTimeline(timeline);
  } catch (failure) {
    if (state.openId === batchId) handleFailure(failure, "#timeline-status");
  }
}

// --- live updates ---

function batchChanged(batchId) {
  state.listDirty = true;
  if (batchId) state.dirty.add(batchId);
  scheduleRefresh();
}

function reloadEverything() {
  state.listDirty = true;
  if (state.openId) state.dirty.add(state.openId);
  scheduleRefresh();
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    const dirty = [...state.dirty];
    const listDirty = state.listDirty;
    state.dirty.clear();
    state.listDirty = false;
    const work = [];
    if (listDirty) work.push(reloadList());
    if (state.openId && dirty.includes(state.openId)) work.push(loadBatch(state.openId));
    await Promise.all(work);
  }, REFRESH_DELAY_MS);
}

// --- submitting ---

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The results service hears of a batch by an event, a moment after intake accepted it: wait for
// that (a bounded number of tries); from then on, frames of the live feed bring every change.
async function awaitRegistration(batchId) {
  for (const wait of REGISTRATION_WAITS_MS) {
    await sleep(wait);
    if (!state.api || !state.submitted.has(batchId)) return;
    await reloadList();
    if (!state.batches.some((batch) => batch.batch_id === batchId)) continue;
    if (state.openId === batchId) await loadBatch(batchId);
    return;
  }
}

function showSubmitErrors(failure) {
  const box = $("#submit-errors");
  const errors = (failure.details && failure.details.errors) || [];
  if (!errors.length) {
    box.textContent = failure.message;
    return;
  }
  const list = element("ul", {}, ...errors.map((error) => element("li", { text: `${error.field}: ${error.message}` })));
  box.replaceChildren(element("p", { text: "The batch was not accepted:" }), list);
}

async function submitBatch(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("#submit-status");
  const errors = $("#submit-errors");
  errors.textContent = "";
  status.textContent = "";
  let prepared;
  try {
    prepared = submissionBody(form);
  } catch (problem) {
    errors.textContent = problem.message;
    return;
  }
  const button = $("#submit-button");
  button.disabled = true;
  status.textContent = "Submitting…";
  try {
    const accepted = await state.api.submit(prepared.body);
    const title = form.querySelector("[name=title]").value.trim();
    state.submitted.set(accepted.batch_id, { title, count: prepared.count, at: new Date().toISOString() });
    form.reset();
    $("#anchors").replaceChildren();
    status.textContent = `Accepted: ${prepared.count} essays in “${title}”.`;
    openBatch(accepted.batch_id, { focus: false });
    awaitRegistration(accepted.batch_id);
  } catch (failure) {
    status.textContent = "";
    if (failure instanceof ApiError && failure.status === 401) handleFailure(failure, "#submit-errors");
    else showSubmitErrors(failure);
  } finally {
    button.disabled = false;
  }
}

function addAnchor() {
  const row = $("#anchor-row").content.firstElementChild.cloneNode(true);
  const index = $("#anchors").children.length + 1;
  row.querySelector(".remove-anchor").setAttribute("aria-label", `Remove anchor ${index}`);
  row.querySelector(".remove-anchor").addEventListener("click", () => row.remove());
  $("#anchors").append(row);
  row.querySelector("select").focus();
}

async function downloadCsv() {
  await download((api, batchId) => api.resultsCsv(batchId));
}

async function downloadComparisons() {
  await download((api, batchId) => api.comparisonsCsv(batchId));
}

async function download(fetchFile) {
  if (!state.api || !state.openId) return;
  try {
    const { blob, filename } = await fetchFile(state.api, state.openId);
    const url = URL.createObjectURL(blob);
    const link = element("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (failure) {
    handleFailure(failure, "#batch-error");
  }
}

// --- start ---

function start() {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (token) await signIn(token, { fromForm: true });
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
  $("#submit-form").addEventListener("submit", submitBatch);
  $("#add-anchor").addEventListener("click", addAnchor);
  $("#download-csv").addEventListener("click", downloadCsv);
  $("#download-comparisons").addEventListener("click", downloadComparisons);
  $("#essays tbody").addEventListener("click", toggleEvidence);
  $("#timeline").addEventListener("toggle", () => showTimeline());
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.shown && state.shown.batch_id === state.openId) {
        renderBatch(state.shown, state.tally);
        for (const essayId of state.expanded) showEvidence(essayId);
      }
    }, 150);
  });
  const token = tokenFromLink() || storedToken();
  if (token) {
    signIn(token);
  } else {
    showSignIn();
  }
}

start();
