// The submission form as the body of POST /v1/batches: JSON when everything was pasted, a
// multipart form as soon as a file is uploaded (pasted texts then travel as .txt files). The
// server checks every rule; here only what makes a request impossible to build is refused.

const SEPARATOR = /^\s*---\s*$/m;

export function pastedEssays(text) {
  return text
    .split(SEPARATOR)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

function anchorsOf(form) {
  return [...form.querySelectorAll(".anchor")].map((row) => ({
    grade: row.querySelector("[name=anchor_grade]").value,
    file: row.querySelector("[name=anchor_file]").files[0] || null,
    text: row.querySelector("[name=anchor_text]").value.trim(),
  }));
}

function textFile(text, name) {
  return new File([text], name, { type: "text/plain" });
}

// Returns {body, count}; throws Error with a teacher-readable message when nothing can be sent.
export function submissionBody(form) {
  const title = form.querySelector("[name=title]").value.trim();
  const files = [...form.querySelector("[name=files]").files];
  const pasted = pastedEssays(form.querySelector("[name=essay_text]").value);
  const anchors = anchorsOf(form);
  const phases = [...form.querySelectorAll("[name=phases]:checked")].map((box) => box.value);
  const email = form.querySelector("[name=notify_email]").value.trim();

  const problems = [];
  if (!title) problems.push("Give the batch a title.");
  if (files.length + pasted.length === 0) problems.push("Add at least one essay: upload files or paste text.");
  if (phases.length === 0) problems.push("Choose at least one assessment.");
  anchors.forEach((anchor, i) => {
    if (!anchor.file && !anchor.text) problems.push(`Anchor ${i + 1} has neither a file nor text.`);
  });
  if (problems.length) throw new Error(problems.join(" "));

  const pastedName = (i) => `pasted-essay-${String(i + 1).padStart(2, "0")}.txt`;
  const uploads = files.length > 0 || anchors.some((anchor) => anchor.file);
  if (!uploads) {
    const body = {
      title,
      phases,
      essays: pasted.map((text, i) => ({ filename: pastedName(i), text })),
      anchors: anchors.map((anchor) => ({ text: anchor.text, grade: anchor.grade })),
    };
    if (email) body.notify_email = email;
    return { body, count: pasted.length };
  }
  const body = new FormData();
  body.append("title", title);
  for (const phase of phases) body.append("phases", phase);
  if (email) body.append("notify_email", email);
  for (const file of files) body.append("files", file, file.name);
  pasted.forEach((text, i) => body.append("files", textFile(text, pastedName(i))));
  anchors.forEach((anchor, i) => {
    body.append("anchor_files", anchor.file || textFile(anchor.text, `anchor-${i + 1}.txt`));
    body.append("anchor_grades", anchor.grade);
  });
  return { body, count: files.length + pasted.length };
}
