/* carebase: progressive enhancement only. Every page works without this script.
 * - Inputs with data-live="URL" fetch an HTML fragment from URL?q=VALUE as the user types
 *   (debounced; an older answer never replaces a newer one) into the element whose id is
 *   data-target. The fragment is server-rendered and escaped.
 * - Buttons with data-fill="ID" data-value="V" put V into the input ID (ICD-10-CM picks).
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
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("input[data-live]"), live);
    document.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("button[data-fill]") : null;
      if (!button) { return; }
      var field = document.getElementById(button.getAttribute("data-fill"));
      if (field) { field.value = button.getAttribute("data-value"); field.focus(); }
    });
  });
})();
