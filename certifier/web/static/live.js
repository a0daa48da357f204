// Live updates for the dashboard, without reloading the page.
//
// The server renders every page whole; this script listens on /events (server-sent events). Each
// "changed" event carries the pipeline's version; when it differs from the version the page was
// rendered with, the page is fetched again and every element marked data-live="name" is replaced
// by its fresh twin, if it changed. A part that holds the keyboard focus is left alone, so
// nobody's typing is wiped. Other scripts listen for "certifier:updated" to redraw (charts).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var target = document.querySelector(button.getAttribute("data-copy"));
      if (!target || button.dataset.bound) return;
      button.dataset.bound = "1";
      button.hidden = false;
      button.addEventListener("click", function () {
        var done = function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(target.value).then(done, function () {});
        } else {
          target.select();
          try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
        }
      });
    });
  }

  var meta = document.querySelector('meta[name="certifier-state"]');
  var current = meta ? meta.content : "";
  var status = document.getElementById("live-status");
  var busy = false;
  var again = false;
  // What the server last sent for each live part: compared with the fresh copy, not with the
  // DOM, which scripts have since changed (charts drawn, buttons enabled).
  var served = {};
  document.querySelectorAll("[data-live]").forEach(function (part) {
    served[part.getAttribute("data-live")] = part.innerHTML;
  });

  function setStatus(on, text) {
    if (!status) return;
    status.hidden = false;
    status.classList.toggle("on", on);
    status.title = "live updates: " + text;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      var response = await fetch(window.location.href, {
        headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin"
      });
      if (!response.ok) return;
      var doc = new DOMParser().parseFromString(await response.text(), "text/html");
      var swapped = [];
      document.querySelectorAll("[data-live]").forEach(function (part) {
        var name = part.getAttribute("data-live");
        var fresh = doc.querySelector('[data-live="' + CSS.escape(name) + '"]');
        if (!fresh || fresh.innerHTML === served[name]) return;
        if (part.contains(document.activeElement) && document.activeElement !== document.body) return;
        served[name] = fresh.innerHTML;
        var node = document.importNode(fresh, true);
        part.replaceWith(node);
        copyButtons(node);
        swapped.push(name);
      });
      var freshMeta = doc.querySelector('meta[name="certifier-state"]');
      if (freshMeta) {
        current = freshMeta.content;
        if (meta) meta.content = current;
      }
      var stamp = doc.querySelector(".foot time");
      var here = document.querySelector(".foot time");
      if (stamp && here) here.replaceWith(document.importNode(stamp, true));
      document.dispatchEvent(new CustomEvent("certifier:updated", { detail: { parts: swapped } }));
    } catch (e) {
      setStatus(false, "refresh failed, retrying");
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  window.certifierRefresh = refresh;

  function listen() {
    if (!window.EventSource || !meta) return;
    var source = new EventSource("/events");
    source.addEventListener("open", function () { setStatus(true, "connected"); });
    source.addEventListener("error", function () { setStatus(false, "reconnecting"); });
    source.addEventListener("changed", function (event) {
      setStatus(true, "connected");
      var version = "";
      try { version = JSON.parse(event.data).version; } catch (e) { return; }
      if (version && version !== current) refresh();
    });
  }

  function start() {
    copyButtons(document);
    listen();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
