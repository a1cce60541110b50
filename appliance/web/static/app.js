// The only script: it follows a test SMS from "queued" to "delivered" or "failed" without
// reloading the page. Everything works without it (there is a "Check again" link).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.querySelector("[data-outbox]");
  if (!box) { return; }
  var url = box.getAttribute("data-outbox");
  var tries = 0;
  // A network may send its delivery report late or never (many prepaid ones do): after a
  // minute at "sent", the page says so instead of waiting in silence.
  var late = box.getAttribute("data-late");
  var sentSince = null;
  function poll() {
    tries += 1;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var words = data.words || data.error || "Unknown state.";
        if (data.state === "sent") {
          if (sentSince === null) { sentSince = Date.now(); }
          if (late && Date.now() - sentSince >= 60000) { words = late; }
        } else {
          sentSince = null;
        }
        box.textContent = words;
        box.setAttribute("data-state", data.state || "");
        if (!data.final && tries < 150) { setTimeout(poll, 2000); }
      })
      .catch(function () { if (tries < 150) { setTimeout(poll, 4000); } });
  }
  poll();
});
