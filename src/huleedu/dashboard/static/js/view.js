// What the page shows, drawn from API documents with DOM calls (text is never parsed as HTML):
// the list of batches and one batch with its phases, essays and scale.

import { renderScale } from "./chart.js";
import { confidence, isFinished, number, phaseLabel, statusLabel, when, whole } from "./format.js";

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
}

function renderPhases(batch) {
  const phases = batch.requested_phases.map((phase) => {
    const result = batch.phase_results[phase] || { completed_count: 0, failed_count: 0, status: "pending" };
    const done = result.completed_count + result.failed_count;
    const id = `phase-${phase}`;
    const failed = result.failed_count ? `, ${result.failed_count} failed` : "";
    return element(
      "div",
      { class: "phase", "data-phase": phase, "data-phase-status": result.status },
      element("label", { for: id, text: `${phaseLabel(phase)}: ${result.status}` }),
      element("progress", { id, max: Math.max(batch.essay_count, 1), value: done }),
      element("span", { class: "count", text: `${done} of ${batch.essay_count} essays${failed}` }),
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

function essayRow(essay) {
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
    element("td", { class: "num", text: whole(essay.cj_comparison_count) }),
    element("td", { class: "num corrections", text: whole(essay.spellcheck_correction_count) }),
    element("td", { class: "num", text: whole(metrics.word_count) }),
    element("td", { class: "status" }, ...(failed ? ["Failed"] : status)),
  );
}

export function renderBatch(batch) {
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
  $("#essays tbody").replaceChildren(...essays.map(essayRow));
  $("#scale").hidden = false; // shown while drawing: the chart takes the width it is shown at
  $("#scale").hidden = !renderScale($("#scale-chart"), essays, batch.title || batch.batch_id);
}
