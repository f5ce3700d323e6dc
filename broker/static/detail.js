// Detail pages: acknowledge a coincidence from its own page.
"use strict";

const button = document.getElementById("ack-detail");
if (button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const list = document.getElementById("acks");
    const note = (text) => {
      const item = document.createElement("li");
      item.textContent = text;
      list.append(item);
    };
    try {
      const r = await fetch(`/api/v1/coincidences/${encodeURIComponent(button.dataset.ivorn)}/acknowledgements`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: "{}" });
      if (r.ok) {
        const ack = await r.json();
        list.querySelector(".muted")?.remove();
        note(`${ack.acked_by} at ${ack.acked_at.replace("T", " ")}`);
      } else {
        note(`acknowledge failed (${r.status})`);
      }
    } catch (e) {
      note("acknowledge failed: the broker did not answer");
    } finally {
      button.disabled = false;
    }
  });
}
