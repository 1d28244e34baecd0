// The one confirmation dialog (a native <dialog>): every admin action goes through it.
import { $ } from "./util.js";

/// Resolves to null when cancelled, else to true (or the number typed when `input` is
/// given: {label, value, min, max}).
export function confirmAction(text, input) {
  const dlg = $("confirm"), field = $("confirm-field"), box = $("confirm-input");
  $("confirm-text").textContent = text;
  field.classList.toggle("hidden", !input);
  if (input) {
    $("confirm-label").textContent = input.label;
    box.value = input.value; box.min = input.min; box.max = input.max; box.required = true;
  } else {
    box.required = false;
  }
  return new Promise((resolve) => {
    const done = () => {
      dlg.removeEventListener("close", done);
      if (dlg.returnValue !== "ok") return resolve(null);
      if (!input) return resolve(true);
      const n = Number(box.value);
      resolve(Number.isInteger(n) && n >= input.min && n <= input.max ? n : null);
    };
    dlg.returnValue = "";
    dlg.addEventListener("close", done);
    dlg.showModal();
    (input ? box : $("confirm-cancel")).focus();
  });
}
