// bpfarm web UI: small progressive enhancements. Every page works without
// this script.
(function () {
  "use strict";

  // Live pages: follow a build's progress, or wait for a revision's
  // builds and relocations to finish, over Server-Sent Events.
  var body = document.body;
  var live = body.getAttribute("data-live");
  var url = body.getAttribute("data-events");
  if (live && url && window.EventSource) {
    var es = new EventSource(url);
    var logEl = document.getElementById("live-log");
    var stateEl = document.getElementById("build-state");
    var statusEl = document.getElementById("live-status");
    var last = {};
    var time = function () {
      var d = new Date();
      return d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
    };
    var append = function (line) {
      if (!logEl) return;
      logEl.appendChild(document.createTextNode(time() + "  " + line + "\n"));
      logEl.scrollTop = logEl.scrollHeight;
    };
    es.addEventListener("update", function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (live === "build") {
        if (d.state !== last.state) {
          if (last.state) {
            var line = d.state;
            if (d.state === "running" && d.attempts > 1) line += " (attempt " + d.attempts + ")";
            if (d.duration_ms) line += " in " + (d.duration_ms / 1000).toFixed(1) + "s";
            if (d.error) line += ": " + d.error;
            append(line);
          }
          if (stateEl) {
            stateEl.setAttribute("data-state", d.state);
            var badge = stateEl.querySelector(".badge");
            var icons = { queued: "…", running: "↻", succeeded: "✓", failed: "✗" };
            if (badge) {
              badge.className = "badge s-" + d.state;
              badge.firstChild.textContent = icons[d.state] || "•";
              badge.lastChild.textContent = " " + d.state;
            }
          }
        }
        var done = d.ok + d.poisoned + (d.unsupported || 0) + d.failed;
        if (d.state === "succeeded" && (done !== last.done || d.pending !== last.pending) && (done + d.pending + d.errors) > 0) {
          append("relocations: " + done + " done (" + d.ok + " ok, " + d.poisoned + " poisoned, " +
            (d.unsupported ? d.unsupported + " unsupported, " : "") + d.failed +
            " failed), " + d.pending + " pending" + (d.errors ? ", " + d.errors + " errors" : ""));
        }
        last = { state: d.state, done: done, pending: d.pending };
      } else if (statusEl && typeof d.pending === "number") {
        statusEl.textContent = d.pending > 0 ? "(" + d.pending + " builds or relocations still running; this page reloads when they finish)" : "";
      }
    });
    es.addEventListener("final", function () {
      es.close();
      window.location.reload();
    });
  }

  // Coverage matrix: one cell open at a time; Escape closes it.
  document.addEventListener("toggle", function (ev) {
    var d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.open || !d.closest("td.c")) return;
    document.querySelectorAll("td.c details[open]").forEach(function (o) {
      if (o !== d) o.open = false;
    });
    // Bring the opened cell into view inside the scrolling matrix: just
    // right of the sticky kernel column, and its details above the bottom.
    var pop = d.querySelector(".pop");
    var wrap = d.closest(".matrix-wrap");
    var td = d.closest("td");
    var th = td && td.parentElement.querySelector("th");
    if (pop && wrap && td && th) {
      var visibleLeft = wrap.scrollLeft + th.offsetWidth;
      if (td.offsetLeft < visibleLeft || td.offsetLeft + pop.offsetWidth > wrap.scrollLeft + wrap.clientWidth) {
        wrap.scrollLeft = Math.max(0, td.offsetLeft - th.offsetWidth - 8);
      }
      var wr = wrap.getBoundingClientRect();
      var pr = pop.getBoundingClientRect();
      if (pr.bottom > wr.bottom) wrap.scrollTop += pr.bottom - wr.bottom + 8;
    }
  }, true);
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Escape") return;
    var open = document.querySelector("td.c details[open]");
    if (open) {
      open.open = false;
      var s = open.querySelector("summary");
      if (s) s.focus();
    }
  });

  // Upload: drag and drop onto the file input's box, and list the files.
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("files");
  var list = document.getElementById("file-list");
  if (zone && input) {
    var show = function () {
      if (!list) return;
      list.textContent = "";
      Array.prototype.forEach.call(input.files, function (f) {
        var li = document.createElement("li");
        li.textContent = f.name + " (" + f.size + " bytes)";
        list.appendChild(li);
      });
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (t) {
      zone.addEventListener(t, function (ev) {
        ev.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (t) {
      zone.addEventListener(t, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (ev) {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        input.files = ev.dataTransfer.files;
        show();
      }
    });
  }
})();
