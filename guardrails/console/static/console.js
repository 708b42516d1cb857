// The chain page's verify progress: poll the job's JSON until it ends. Nothing else needs JS.
(function () {
  var box = document.getElementById("verify-status");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  function show(doc) {
    var bar = document.getElementById("verify-progress");
    var text = document.getElementById("verify-text");
    if (doc.state === "running") {
      bar.max = Math.max(doc.total, 1); bar.value = doc.done;
      text.textContent = "verifying: " + doc.done + " of " + doc.total + " events";
      window.setTimeout(poll, 500);
    } else if (doc.state === "idle") {
      text.textContent = "not verified yet in this session";
    } else {
      bar.max = 1; bar.value = 1;
      var msg = doc.state === "intact"
        ? "intact: " + doc.events_checked + " events in " + doc.chains_checked + " chains verified"
        : doc.state === "tampered"
          ? "TAMPERED: chain " + doc.problems[0].chain_id + " seq " + doc.problems[0].seq + ": " + doc.problems[0].reason
          : "error: " + doc.error;
      text.textContent = msg;
      box.setAttribute("data-state", doc.state);
    }
  }
  function poll() {
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(show);
  }
  poll();
})();
