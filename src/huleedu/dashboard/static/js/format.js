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

// The time of day only (a timeline's steps are minutes apart; the full date is in its title).
export function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso || "") : date.toLocaleTimeString();
}

export function confidence(label, score) {
  if (!label && typeof score !== "number") return "–";
  const percent = typeof score === "number" ? ` (${Math.round(score * 100)}%)` : "";
  return `${label ? label.charAt(0) + label.slice(1).toLowerCase() : ""}${percent}`.trim();
}

// A step of a batch's timeline by its topic (the part after the deployment's prefix).
const STEP_LABELS = {
  "batch.essays.registered.v1": "Batch registered",
  "essay.spellcheck.results.v1": "Spell check result",
  "cj_assessment.progress.v1": "Comparative judgement progress",
  "cj_assessment.result.published.v1": "Comparative judgement result",
  "batch.deadline.reached.v1": "Deadline reached",
};

const SOURCE_LABELS = {
  intake_service: "Intake",
  spellcheck_service: "Spell check",
  cj_assessment_service: "Comparative judgement",
  result_aggregator_service: "Results service",
};

export function stepLabel(eventType) {
  const known = Object.keys(STEP_LABELS).find((suffix) => String(eventType).endsWith(`.${suffix}`));
  return known ? STEP_LABELS[known] : String(eventType);
}

export function sourceLabel(source) {
  return SOURCE_LABELS[source] || String(source).replace(/_/g, " ");
}

// Seconds as a person reads a delay: 0.25 s, 12 s, 4 min 5 s, 2 h 10 min.
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  const sign = seconds < 0 ? "−" : "";
  const s = Math.abs(seconds);
  if (s < 10) return `${sign}${s.toFixed(s < 1 ? 2 : 1)} s`;
  if (s < 60) return `${sign}${Math.round(s)} s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${sign}${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
