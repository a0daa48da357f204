// Operator actions on the candidate page: cancel, promote, waive, mark bad, retry, stop culprit
// finding.
//
// They are the REST API's own endpoints (POST /api/v1/candidates/{id}/cancel|promote|waive|
// mark-bad|retry|culprit/stop) with a bearer token. The token is pasted once and kept in this browser's
// localStorage, never sent anywhere but this origin's API. A form the server does not offer (data-unavailable, or an
// answer 404/405 from the API) stays disabled. After an action the page refreshes its live parts.
(function () {
  "use strict";
  var KEY = "certifier.token";

  function token() {
    try { return window.localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function say(text, ok) {
    var out = document.querySelector(".action-result");
    if (!out) return;
    out.textContent = text;
    out.classList.toggle("ok", !!ok);
    out.classList.toggle("error", !ok);
  }

  function sync() {
    var have = !!token();
    var form = document.querySelector(".token-form");
    if (form) {
      form.hidden = false;
      form.querySelector(".token-state").textContent = have
        ? "A token is saved in this browser." : "Paste a token to enable the actions.";
      form.querySelector("[data-forget-token]").hidden = !have;
    }
    document.querySelectorAll("form.action").forEach(function (f) {
      var unavailable = f.hasAttribute("data-unavailable");
      var button = f.querySelector("button[type=submit]");
      if (button) {
        button.disabled = unavailable || !have;
        button.title = unavailable ? "not available on this server" : (have ? "" : "save a token first");
      }
    });
  }

  function body(form) {
    var out = {};
    new FormData(form).forEach(function (value, key) { if (value !== "") out[key] = value; });
    return out;
  }

  async function submit(event) {
    event.preventDefault();
    var form = event.target;
    var action = form.getAttribute("data-action");
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    say(action + "…", true);
    try {
      var response = await fetch(form.getAttribute("action"), {
        method: "POST", credentials: "omit",
        headers: { "Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": "Bearer " + token() },
        body: JSON.stringify(body(form))
      });
      var detail = "";
      try { detail = (await response.json()).detail || ""; } catch (e) { detail = ""; }
      if (typeof detail !== "string") detail = JSON.stringify(detail);
      if (response.ok) {
        say(action + ": done", true);
        form.reset();
        if (window.certifierRefresh) window.certifierRefresh();
      } else if (response.status === 404 || response.status === 405) {
        form.setAttribute("data-unavailable", "");
        say(action + " is not available on this server", false);
      } else if (response.status === 401 || response.status === 403) {
        say(action + " refused: the token is missing, wrong or lacks the scope (" + response.status + ")", false);
      } else {
        say(action + " failed (" + response.status + ")" + (detail ? ": " + detail : ""), false);
      }
    } catch (e) {
      say(action + " failed: " + e, false);
    } finally {
      sync();
    }
  }

  function bind() {
    var form = document.querySelector(".token-form");
    if (form && !form.dataset.bound) {
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var value = form.querySelector("input[name=token]").value.trim();
        try { if (value) window.localStorage.setItem(KEY, value); } catch (e) { /* private mode */ }
        form.reset();
        sync();
      });
      form.querySelector("[data-forget-token]").addEventListener("click", function () {
        try { window.localStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
        sync();
      });
    }
    document.querySelectorAll("form.action").forEach(function (f) {
      if (f.dataset.bound) return;
      f.dataset.bound = "1";
      f.addEventListener("submit", submit);
    });
    sync();
  }

  // The panel is a live part: after a refresh it is new DOM that needs its handlers again.
  document.addEventListener("certifier:updated", bind);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", bind);
  else bind();
})();
