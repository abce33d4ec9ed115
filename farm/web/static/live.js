// Live parts of a page: an element with data-live-src is fetched again every
// data-live-every ms and replaced, until it says data-done="1".
"use strict";
function follow(el) {
  if (el.dataset.done === "1") return;
  setTimeout(async () => {
    let next = el;
    try {
      const r = await fetch(el.dataset.liveSrc, {credentials: "same-origin", cache: "no-store"});
      if (r.ok) {
        const box = document.createElement("div");
        box.innerHTML = await r.text();
        next = box.firstElementChild || el;
        if (next !== el) el.replaceWith(next);
      }
    } catch (e) { /* the server restarts: try again next time */ }
    follow(next);
  }, Number(el.dataset.liveEvery || 2000));
}
document.querySelectorAll("[data-live-src]").forEach(follow);
