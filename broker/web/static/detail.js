// Detail pages: acknowledge a coincidence from its own page.
import { ackCoincidence, utc } from "./common.js";

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
      const ack = await ackCoincidence(button.dataset.ivorn);
      list.querySelector(".muted")?.remove();
      note(`${ack.acked_by} at ${utc(ack.acked_at)} UTC`);
    } catch (e) {
      note(`acknowledge failed: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
}
