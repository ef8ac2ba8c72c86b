// The teacher's token: kept in sessionStorage (gone when the tab closes), read for display only.
// The server verifies it on every request; nothing here trusts its content.

const KEY = "huleedu.token";

export function storedToken() {
  return sessionStorage.getItem(KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

// The token of a `#token=...` link (the demo prints one), removed from the address bar at once.
export function tokenFromLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (!token) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return token.trim();
}

// {sub, exp} of a JWT, or null when it is not one. Not verified: for the page's own display.
export function claims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const payload = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    return typeof payload === "object" && payload ? payload : null;
  } catch (_) {
    return null;
  }
}
