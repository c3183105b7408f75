/* carebase: progressive enhancement only. Every page works without this script.
 * - Inputs with data-live="URL" fetch an HTML fragment from URL?q=VALUE as the user types
 *   (debounced; an older answer never replaces a newer one) into the element whose id is
 *   data-target. The fragment is server-rendered and escaped.
 * - Buttons with data-fill="ID" data-value="V" put V into the input ID (ICD-10-CM picks).
 * - Forms with data-stay post in the background and replace their section with the answer
 *   (the form again, with its errors or a "saved" line), so the page stays: the video visit
 *   goes on while the clinician writes the note and orders. Without script they post as usual.
 */
(function () {
  "use strict";
  function live(input) {
    var target = document.getElementById(input.getAttribute("data-target"));
    var url = input.getAttribute("data-live");
    var param = input.getAttribute("data-param") || "q";
    var timer = null;
    var controller = null;
    if (!target || !url) { return; }
    input.addEventListener("input", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () {
        if (controller) { controller.abort(); }
        controller = new AbortController();
        var query = new URLSearchParams();
        query.set(param, input.value);
        fetch(url + "?" + query.toString(), {
          credentials: "same-origin",
          headers: { "Accept": "text/html" },
          signal: controller.signal
        }).then(function (response) {
          return response.ok ? response.text() : "";
        }).then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var main = doc.querySelector("main");
          target.replaceChildren.apply(target, Array.prototype.slice.call((main || doc.body).childNodes));
        }).catch(function () { /* aborted or offline: keep the current list */ });
      }, 200);
    });
  }
  function stay(event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-stay")) { return; }
    event.preventDefault();
    var section = form.closest("section") || form;
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "text/html", "X-Carebase-Fragment": "1" },
      body: new URLSearchParams(new FormData(form))
    }).then(function (response) {
      return response.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.querySelector("section") || doc.body;
      section.replaceWith(fresh);
      var focus = fresh.querySelector("[aria-invalid=true], [role=status]");
      if (focus) { focus.setAttribute("tabindex", "-1"); focus.focus(); }
    }).catch(function () { form.submit(); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("input[data-live]"), live);
    document.addEventListener("submit", stay);
    document.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("button[data-fill]") : null;
      if (!button) { return; }
      var field = document.getElementById(button.getAttribute("data-fill"));
      if (field) { field.value = button.getAttribute("data-value"); field.focus(); }
    });
  });
})();
