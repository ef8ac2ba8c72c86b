// The comparative-judgement scale as an inline SVG drawn here: one row per ranked essay, its score
// as a dot with a 95% interval bar (score ± 1.96 SE), over shaded bands of the projected grades.
// The table beside it holds the same numbers, so the chart is a picture, not the only source.

const SVG = "http://www.w3.org/2000/svg";
const Z95 = 1.96;
const MIN_WIDTH = 320;
const DEFAULT_WIDTH = 640;
const MARGIN = { left: 40, right: 16, top: 26, bottom: 30 };
const ROW = 18;

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / magnitude;
  const nice = scaled < 1.5 ? 1 : scaled < 3 ? 2 : scaled < 7 ? 5 : 10;
  return nice * magnitude;
}

// Bands of the grades present, ordered by their mean score; a boundary halfway between the
// highest score of one grade and the lowest of the next.
export function gradeBands(points, lo, hi) {
  const groups = new Map();
  for (const point of points) {
    if (!point.grade) continue;
    const group = groups.get(point.grade) || { grade: point.grade, min: Infinity, max: -Infinity, sum: 0, n: 0 };
    group.min = Math.min(group.min, point.score);
    group.max = Math.max(group.max, point.score);
    group.sum += point.score;
    group.n += 1;
    groups.set(point.grade, group);
  }
  const ordered = [...groups.values()].sort((a, b) => a.sum / a.n - b.sum / b.n);
  return ordered.map((group, i) => ({
    grade: group.grade,
    from: i === 0 ? lo : (ordered[i - 1].max + group.min) / 2,
    to: i === ordered.length - 1 ? hi : (group.max + ordered[i + 1].min) / 2,
  }));
}

export function renderScale(container, essays, title) {
  container.replaceChildren();
  const points = essays
    .filter((essay) => typeof essay.cj_score === "number")
    .map((essay) => ({
      rank: essay.cj_rank,
      name: essay.filename || essay.essay_id,
      score: essay.cj_score,
      se: typeof essay.cj_se === "number" ? essay.cj_se : 0,
      grade: essay.letter_grade,
      label: essay.confidence_label,
    }))
    .sort((a, b) => (a.rank ?? Infinity) - (b.rank ?? Infinity));
  if (points.length === 0) return false;

  // Drawn at the width it is shown at, so its text stays readable on a phone.
  const WIDTH = Math.max(MIN_WIDTH, Math.round(container.clientWidth || DEFAULT_WIDTH));
  let lo = Math.min(...points.map((p) => p.score - Z95 * p.se));
  let hi = Math.max(...points.map((p) => p.score + Z95 * p.se));
  if (hi - lo < 1e-9) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.04;
  lo -= pad;
  hi += pad;
  const height = MARGIN.top + points.length * ROW + MARGIN.bottom;
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const x = (value) => MARGIN.left + ((value - lo) / (hi - lo)) * plotWidth;
  const bottom = MARGIN.top + points.length * ROW;

  const bands = gradeBands(points, lo, hi);
  const titleId = `scale-title-${Math.random().toString(36).slice(2)}`;
  const svg = node("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: "img",
    "aria-labelledby": `${titleId} ${titleId}-desc`,
  });
  svg.append(node("title", { id: titleId }, `Scale of ${title}`));
  const bandText = bands.map((band) => `${band.grade} from ${band.from.toFixed(2)} to ${band.to.toFixed(2)}`);
  svg.append(
    node(
      "desc",
      { id: `${titleId}-desc` },
      `${points.length} essays with scores from ${Math.min(...points.map((p) => p.score)).toFixed(2)} to ` +
        `${Math.max(...points.map((p) => p.score)).toFixed(2)}.` +
        (bands.length ? ` Grade bands: ${bandText.join("; ")}.` : " No grades (no anchors)."),
    ),
  );

  bands.forEach((band, i) => {
    const left = x(band.from);
    const width = Math.max(0, x(band.to) - left);
    svg.append(node("rect", { class: `band-${i % 2}`, x: left, y: MARGIN.top - 16, width, height: bottom - MARGIN.top + 16 }));
    if (width >= 14) {
      svg.append(node("text", { class: "band-label", x: left + width / 2, y: MARGIN.top - 4, "text-anchor": "middle" }, band.grade));
    }
  });

  svg.append(node("line", { class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: bottom, y2: bottom }));
  const step = niceStep(hi - lo, 6);
  for (let tick = Math.ceil(lo / step) * step; tick <= hi; tick += step) {
    const tx = x(tick);
    svg.append(node("line", { class: "axis", x1: tx, x2: tx, y1: bottom, y2: bottom + 4 }));
    svg.append(node("text", { class: "tick", x: tx, y: bottom + 16, "text-anchor": "middle" }, (Math.abs(tick) < 1e-9 ? 0 : tick).toFixed(step < 1 ? 1 : 0)));
  }
  svg.append(node("text", { class: "tick", x: WIDTH - MARGIN.right, y: bottom + 28, "text-anchor": "end" }, "score (logits)"));

  points.forEach((point, i) => {
    const y = MARGIN.top + i * ROW + ROW / 2;
    const group = node("g", { class: "essay-point" });
    group.append(
      node(
        "title",
        {},
        `Rank ${point.rank ?? "–"}: ${point.name}. Score ${point.score.toFixed(2)} ± ${point.se.toFixed(2)}` +
          (point.grade ? `, grade ${point.grade}` : "") + (point.label ? `, ${point.label} confidence` : ""),
      ),
    );
    group.append(node("text", { class: "row-label", x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" }, String(point.rank ?? "–")));
    if (point.se > 0) {
      group.append(node("line", { class: "interval", x1: x(point.score - Z95 * point.se), x2: x(point.score + Z95 * point.se), y1: y, y2: y }));
    }
    group.append(node("circle", { class: point.label === "LOW" ? "point low" : "point", cx: x(point.score), cy: y, r: 4 }));
    svg.append(group);
  });
  container.append(svg);
  return true;
}
