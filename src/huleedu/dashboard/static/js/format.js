// How values read on the page: statuses, phases, numbers and times.

export const STATUS_LABELS = {
  submitted: "Submitted",
  pending_content: "Waiting for content",
  ready: "Ready",
  processing: "Processing",
  completed_successfully: "Completed",
  completed_with_failures: "Completed with failures",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const PHASE_LABELS = {
  spellcheck: "Spell check",
  cj_assessment: "Comparative judgement",
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || "").replace(/_/g, " ");
}

export function phaseLabel(phase) {
  return PHASE_LABELS[phase] || String(phase).replace(/_/g, " ");
}

export function isFinished(status) {
  return ["completed_successfully", "completed_with_failures", "failed", "cancelled"].includes(status);
}

export function number(value, digits = 2) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

export function whole(value) {
  return typeof value === "number" && Number.isFinite(value) ? String(Math.round(value)) : "–";
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function confidence(label, score) {
  if (!label && typeof score !== "number") return "–";
  const percent = typeof score === "number" ? ` (${Math.round(score * 100)}%)` : "";
  return `${label ? label.charAt(0) + label.slice(1).toLowerCase() : ""}${percent}`.trim();
}
