// Shared by the live page and the detail pages (ES module: fetched and cached once).

export const enc = encodeURIComponent;

// An ISO 8601 UTC time as the pages show it: "2026-11-21 16:31:02.123" (ms, no "T"/"Z").
export const utc = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace("Z", "") : "");

// Acknowledge a coincidence as the signed-in shifter: the stored acknowledgement, or an
// Error saying why not ("HTTP 403", "the broker did not answer").
export async function ackCoincidence(ivorn) {
  let r;
  try {
    r = await fetch(`/api/v1/coincidences/${enc(ivorn)}/acknowledgements`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: "{}" });
  } catch (e) {
    throw new Error("the broker did not answer");
  }
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}
