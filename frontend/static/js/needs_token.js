/* The "API token needed" page: set the token, then reload the page with it. */
(function () {
  "use strict";
  document.getElementById("needs-token-set").addEventListener("click", function () {
    window.robaudit.openTokenDialog("");
  });
  document.addEventListener("robaudit:token", function (ev) { if (ev.detail.set) window.location.reload(); });
})();
