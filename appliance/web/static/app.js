// The only script: it follows a test SMS from "queued" to "delivered" or "failed" without
// reloading the page. Everything works without it (there is a "Check again" link).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.querySelector("[data-outbox]");
  if (!box) { return; }
  var url = box.getAttribute("data-outbox");
  var tries = 0;
  function poll() {
    tries += 1;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        box.textContent = data.words || data.error || "Unknown state.";
        box.setAttribute("data-state", data.state || "");
        if (!data.final && tries < 150) { setTimeout(poll, 2000); }
      })
      .catch(function () { if (tries < 150) { setTimeout(poll, 4000); } });
  }
  poll();
});
