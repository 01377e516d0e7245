/* Compare page (choose evaluations, save the report) and report page (share link, exports). */
(function () {
  "use strict";
  var R = window.robaudit, h = R.h;
  function $(id) { return document.getElementById(id); }

  function wireCopy() {
    var btn = $("share-copy"), input = $("share-url");
    if (!btn || !input) return;
    btn.addEventListener("click", function () {
      var done = function () {
        btn.textContent = "Copied";
        setTimeout(function () { btn.textContent = "Copy"; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () { input.select(); });
      } else {
        input.select();
        try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
      }
    });
  }

  function exportLinks(id) {
    var box = $("export-links");
    box.textContent = "";
    ["html", "csv", "json"].forEach(function (fmt) {
      box.appendChild(h("a", { class: "button secondary", href: "/api/v1/reports/" + id + "/export?format=" + fmt,
                               download: "report-" + id + "." + fmt, "data-download": true,
                               "data-error-box": "export-message" }, ["Export " + fmt.toUpperCase()]));
    });
    R.wireDownloads(box);
  }

  // ------------------------------------------------------------------ compare: choosing evaluations
  var compareForm = $("compare-form");
  if (compareForm) {
    compareForm.addEventListener("submit", function (ev) {
      var ticked = compareForm.querySelectorAll('input[name="ids"]:checked').length;
      var err = $("cmp-ids-error");
      if (!ticked) {
        ev.preventDefault();
        err.textContent = "Tick at least one evaluation.";
        var first = compareForm.querySelector('input[name="ids"]');
        if (first) first.focus();
      } else if (ticked > 50) {
        ev.preventDefault();
        err.textContent = "A report holds at most 50 evaluations.";
      } else {
        err.textContent = "";
      }
    });
  }

  // ------------------------------------------------------------------ compare: saving the report
  var reportForm = $("report-form");
  if (reportForm) {
    var V = window.robauditForms;
    V.clearOnInput(reportForm);
    reportForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var box = $("report-message");
      R.clearMessage(box);
      var title = $("report-title");
      title.value = title.value.trim();
      if (!V.validate(reportForm, [])) return;
      var ids = reportForm.getAttribute("data-ids").split(",").filter(Boolean).map(Number);
      $("report-save").disabled = true;
      R.post("/reports", { title: title.value, evaluation_ids: ids }).then(function (rep) {
        reportForm.hidden = true;
        var link = $("report-link");
        link.href = rep.url;
        link.textContent = rep.id + " (“" + rep.title + "”)";
        $("share-url").value = window.location.origin + rep.share_url;
        exportLinks(rep.id);
        $("report-saved").hidden = false;
        $("share-url").focus();
        $("share-url").select();
      }).catch(function (err) {
        R.showError(box, err, "The report was not saved");
        $("report-save").disabled = false;
      });
    });
  }

  wireCopy();
})();
