// What the page shows, drawn from API documents with DOM calls (text is never parsed as HTML):
// the list of batches and one batch with its phases, essays and scale.

import { renderScale } from "./chart.js";
import {
  confidence,
  duration,
  isFinished,
  number,
  phaseLabel,
  sourceLabel,
  statusLabel,
  stepLabel,
  clock,
  when,
  whole,
} from "./format.js";

export const $ = (selector) => document.querySelector(selector);

export function element(name, attributes = {}, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function badge(status) {
  return element("span", { class: "badge", "data-status": status, text: statusLabel(status) });
}

// The list of batches; `onOpen(batchId)` when one is chosen.
export function renderBatchList(batches, openId, onOpen) {
  const items = batches.map((batch) => {
    const done = batch.completed_essay_count + batch.failed_essay_count;
    const button = element(
      "button",
      { type: "button", class: "batch-link", "aria-current": batch.batch_id === openId ? "true" : null },
      element("span", { class: "name", text: batch.title || batch.batch_id }),
      element(
        "span",
        { class: "sub" },
        badge(batch.overall_status),
        ` ${done} of ${batch.essay_count} essays · ${when(batch.created_at)}`,
      ),
    );
    button.addEventListener("click", () => onOpen(batch.batch_id));
    return element("li", { "data-batch-id": batch.batch_id, "data-status": batch.overall_status }, button);
  });
  $("#batches").replaceChildren(...items);
  $("#batches-empty").hidden = items.length > 0;
}

// --- one batch ---

export function clearBatch() {
  delete $("#batch").dataset.status;
  $("#batch-title").textContent = "Loading…";
  for (const selector of ["#batch-status", "#batch-meta", "#phases", "#essays tbody", "#batch-error"]) {
    $(selector).replaceChildren();
  }
  $("#scale").hidden = true;
  clearTimeline();
}

// --- the timeline of the open batch ---

export function clearTimeline() {
  $("#timeline").open = false;
  $("#timeline-table tbody").replaceChildren();
  $("#timeline-status").textContent = "";
}

// Each step with when its service sent it, how long it took to reach the results service and how
// long after the step before it; `timeline` is the document of GET /v1/batches/{id}/timeline.
export function renderTimeline(timeline) {
  const rows = timeline.events.map((event) =>
    element(
      "tr",
      { "data-event-id": event.event_id, "data-source": event.source_service },
      element(
        "td",
        { class: "when" },
        element("time", { datetime: event.produced_at, title: when(event.produced_at), text: clock(event.produced_at) }),
      ),
      element("td", { class: "step", text: stepLabel(event.event_type) }),
      element("td", { class: "source", text: sourceLabel(event.source_service) }),
      element("td", { class: "num lag", text: duration(event.lag_seconds) }),
      element("td", { class: "num gap", text: event.since_previous_seconds === null ? "–" : duration(event.since_previous_seconds) }),
    ),
  );
  $("#timeline-table tbody").replaceChildren(...rows);
  const { total } = timeline.pagination;
  const ready = timeline.results_ready_at ? ` Results announced ${when(timeline.results_ready_at)}.` : "";
  const shown = total > rows.length ? ` Showing the first ${rows.length} of ${total}.` : "";
  $("#timeline-status").textContent = total
    ? `${total} step${total === 1 ? "" : "s"}.${ready}${shown}`
    : "No step recorded (they are kept for a limited time).";
}

export function renderSubmitted(batchId, local) {
  const section = $("#batch");
  section.dataset.status = "submitted";
  $("#batch-title").textContent = local.title;
  $("#batch-status").replaceChildren(badge("submitted"), ` ${local.count} essays accepted; waiting for processing to start.`);
  $("#batch-meta").textContent = `Batch ${batchId}`;
  $("#phases").replaceChildren();
  $("#scale").hidden = true;
  $("#essays tbody").replaceChildren();
  $("#essays-hint").hidden = true;
}

// A phase under way that reports its own progress (CJ: judgements, a pair or a ranking each) shows that; otherwise, and
// once it is finished, the bar counts essays.
function renderPhases(batch) {
  const phases = batch.requested_phases.map((phase) => {
    const result = batch.phase_results[phase] || { completed_count: 0, failed_count: 0, status: "pending" };
    const id = `phase-${phase}`;
    const progress = result.progress;
    let max = Math.max(batch.essay_count, 1);
    let value = result.completed_count + result.failed_count;
    let count = `${value} of ${batch.essay_count} essays${result.failed_count ? `, ${result.failed_count} failed` : ""}`;
    if (progress && progress.planned > 0) {
      [max, value] = [progress.planned, Math.min(progress.done, progress.planned)];
      count = `${progress.done} of up to ${progress.planned} judgements`;
    }
    return element(
      "div",
      { class: "phase", "data-phase": phase, "data-phase-status": result.status },
      element("label", { for: id, text: `${phaseLabel(phase)}: ${result.status}` }),
      element("progress", { id, max, value }),
      element("span", { class: "count", text: count }),
    );
  });
  $("#phases").replaceChildren(...phases);
}

function failureText(phase, detail) {
  if (!detail) return null;
  return element("span", { class: "failure", text: `${phaseLabel(phase)} failed: ${detail.message || detail.code}` });
}

function essayStatus(essay) {
  const failures = [
    failureText("spellcheck", essay.spellcheck_error_detail),
    failureText("cj_assessment", essay.cj_assessment_error_detail),
  ].filter(Boolean);
  if (failures.length) return failures;
  const statuses = [
    ["spellcheck", essay.spellcheck_status],
    ["cj_assessment", essay.cj_assessment_status],
  ].filter(([, status]) => status);
  if (statuses.every(([, status]) => status === "completed")) return ["Done"];
  return [statuses.map(([phase, status]) => `${phaseLabel(phase)}: ${status}`).join("; ")];
}

// The comparisons cell: the count, and a button with the essay's wins and losses that shows every
// comparison under the row (the page fetches them when it is pressed).
function comparisonsCell(essay, index, tally) {
  const cell = element("td", { class: "num comparisons" }, whole(essay.cj_comparison_count));
  if (!tally) return cell;
  const name = essay.filename || essay.essay_id;
  const toggle = element("button", {
    type: "button",
    class: "link evidence-toggle",
    "aria-expanded": "false",
    "aria-controls": `evidence-${index}`,
    "aria-label": `${tally.won} won, ${tally.lost} lost: show the comparisons of ${name}`,
    "data-essay-id": essay.essay_id,
    text: `${tally.won}–${tally.lost}`,
  });
  cell.append(" ", toggle);
  return cell;
}

function essayRow(essay, index, tally) {
  const metrics = essay.spellcheck_metrics || {};
  const failed = essay.spellcheck_error_detail || essay.cj_assessment_error_detail;
  const status = essayStatus(essay);
  const score = typeof essay.cj_score === "number" ? `${number(essay.cj_score)} ± ${number(essay.cj_se)}` : "–";
  return element(
    "tr",
    { "data-essay-id": essay.essay_id, class: failed ? "failed" : null },
    element("td", { class: "num rank", text: essay.cj_rank ?? "–" }),
    element("td", { class: "name" }, essay.filename || essay.essay_id, ...(failed ? status : [])),
    element("td", { class: "grade", text: essay.letter_grade || "–" }),
    element("td", { class: "confidence", text: confidence(essay.confidence_label, essay.confidence_score) }),
    element("td", { class: "num score", text: score }),
    comparisonsCell(essay, index, tally),
    element("td", { class: "num corrections", text: whole(essay.spellcheck_correction_count) }),
    element("td", { class: "num", text: whole(metrics.word_count) }),
    element("td", { class: "status" }, ...(failed ? ["Failed"] : status)),
  );
}

const COLUMNS = 9;

// One essay's comparisons, in a row under its own: opponent, shown first or second, won or lost,
// the judge's rationale and who judged. `nameOf(essayId)` gives the filename to show.
export function renderEvidence(essayId, evidence, nameOf) {
  const toggle = [...document.querySelectorAll("#essays .evidence-toggle")].find((b) => b.dataset.essayId === essayId);
  if (!toggle) return;
  const row = toggle.closest("tr");
  const id = toggle.getAttribute("aria-controls");
  document.getElementById(id)?.remove();
  const items = evidence.comparisons.map((c) =>
    element(
      "li",
      { class: "comparison", "data-result": c.result },
      element("span", { class: "outcome", text: { won: "Won", lost: "Lost", dropped: "Dropped" }[c.result] }),
      ` against ${nameOf(c.opponent_id)}, shown ${c.shown}`,
      c.confidence !== null ? ` (confidence ${Math.round(c.confidence * 100)}%)` : "",
      element("span", { class: "rationale", text: c.rationale || c.error || "No rationale given." }),
      element("span", { class: "judge", text: `${c.judge} · ${c.model}${c.prompt_version ? ` · prompt ${c.prompt_version}` : ""}` }),
    ),
  );
  const body = items.length
    ? element("ol", { class: "comparisons-list" }, ...items)
    : element("p", { class: "muted", text: "No comparisons stored for this essay." });
  const heading = `${nameOf(essayId)}: ${evidence.won} won, ${evidence.lost} lost${evidence.dropped ? `, ${evidence.dropped} dropped` : ""}`;
  const cell = element("td", { colspan: COLUMNS }, element("h3", { class: "evidence-title", text: heading }), body);
  row.after(element("tr", { id, class: "evidence", "data-essay-id": essayId }, cell));
  toggle.setAttribute("aria-expanded", "true");
}

export function hideEvidence(essayId) {
  const toggle = [...document.querySelectorAll("#essays .evidence-toggle")].find((b) => b.dataset.essayId === essayId);
  if (!toggle) return;
  document.getElementById(toggle.getAttribute("aria-controls"))?.remove();
  toggle.setAttribute("aria-expanded", "false");
}

// Whether the results table is wider than its box: then it says so and scrolls sideways.
function flagOverflow() {
  const wrap = $("#essays-wrap");
  const overflowing = wrap.scrollWidth > wrap.clientWidth + 1;
  wrap.dataset.overflow = overflowing ? "true" : "false";
  $("#essays-hint").hidden = !overflowing;
}

export function renderBatch(batch, tally = null) {
  const section = $("#batch");
  section.dataset.status = batch.overall_status;
  $("#batch-title").textContent = batch.title || batch.batch_id;
  const failed = batch.failed_essay_count ? `, ${batch.failed_essay_count} failed` : "";
  const progress = isFinished(batch.overall_status)
    ? ` ${batch.completed_essay_count} of ${batch.essay_count} essays assessed${failed}.`
    : ` ${batch.completed_essay_count} of ${batch.essay_count} essays done${failed}; updates arrive live.`;
  $("#batch-status").replaceChildren(badge(batch.overall_status), progress);
  const ready = batch.results_ready_at ? ` · results ready ${when(batch.results_ready_at)}` : "";
  $("#batch-meta").textContent = `Submitted ${when(batch.created_at)}${ready} · batch ${batch.batch_id}`;
  renderPhases(batch);
  const essays = [...batch.essays].sort((a, b) => (a.cj_rank ?? Infinity) - (b.cj_rank ?? Infinity));
  // No judgement stored (yet): no wins and losses to show.
  const tallies = tally && Object.keys(tally.essays || {}).length ? tally.essays : null;
  const rows = essays.map((essay, index) =>
    essayRow(essay, index, tallies ? tallies[essay.essay_id] || { won: 0, lost: 0, dropped: 0 } : null),
  );
  $("#essays tbody").replaceChildren(...rows);
  flagOverflow();
  $("#scale").hidden = false; // shown while drawing: the chart takes the width it is shown at
  $("#scale").hidden = !renderScale($("#scale-chart"), essays, batch.title || batch.batch_id);
}
