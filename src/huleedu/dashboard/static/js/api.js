// The teacher API of this origin: every request carries the teacher's bearer token; every error
// becomes an ApiError with the status and the message of the structured error body.

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || {};
  }
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let details = {};
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      details = body.error.details || {};
    }
  } catch (_) {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, details);
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(path, options = {}) {
    const headers = { Authorization: `Bearer ${this.token}`, ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, "The server cannot be reached. Check your connection and try again.");
    }
    if (!response.ok) throw await failure(response);
    return response;
  }

  async listBatches() {
    return (await this.request("/v1/batches?limit=100")).json();
  }

  async getBatch(batchId) {
    return (await this.request(`/v1/batches/${encodeURIComponent(batchId)}`)).json();
  }

  async submit(body) {
    // FormData for uploads (the browser sets the multipart boundary), JSON otherwise.
    const options = body instanceof FormData
      ? { method: "POST", body }
      : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    return (await this.request("/v1/batches", options)).json();
  }

  async timeline(batchId) {
    return (await this.request(`/v1/batches/${encodeURIComponent(batchId)}/timeline`)).json();
  }

  async comparisonTally(batchId) {
    return (await this.request(`/v1/batches/${encodeURIComponent(batchId)}/comparisons`)).json();
  }

  async essayComparisons(batchId, essayId) {
    const path = `/v1/batches/${encodeURIComponent(batchId)}/essays/${encodeURIComponent(essayId)}/comparisons`;
    return (await this.request(path)).json();
  }

  async comparisonsCsv(batchId) {
    return this.download(`/v1/batches/${encodeURIComponent(batchId)}/comparisons.csv`, "comparisons.csv");
  }

  async resultsCsv(batchId) {
    return this.download(`/v1/batches/${encodeURIComponent(batchId)}/results.csv`, "results.csv");
  }

  async download(path, fallback) {
    const response = await this.request(path);
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    return { blob: await response.blob(), filename: match ? match[1] : fallback };
  }
}
