/* Compare page (choose evaluations, save the report) and report page (share link: copy, new link,
 * revoke; delete the report; exports). */
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

  /* The API answers a path unless the server has a public URL configured: copy an absolute link. */
  function showShareUrl(url) {
    $("share-url").value = url ? new URL(url, window.location.href).href : "";
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
        showShareUrl(rep.share_url);
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

  // ------------------------------------------------------------------ report page: managing the link
  var shareActions = $("share-actions");
  if (shareActions) {
    var id = shareActions.getAttribute("data-report");
    var base = "/reports/" + encodeURIComponent(id);
    var box = $("share-message"), hint = $("share-hint");
    showShareUrl($("share-url").value);
    var act = function (button, call, done, failure) {
      button.addEventListener("click", function () {
        R.clearMessage(box);
        button.disabled = true;
        call().then(done).catch(function (err) { R.showError(box, err, failure); })
          .then(function () { button.disabled = false; });
      });
    };
    act($("share-rotate"), function () { return R.post(base + "/share"); }, function (link) {
      showShareUrl(link.share_url);
      hint.textContent = "Anyone with this link sees this report only, without the API token.";
      R.showMessage(box, "success", "New share link made: the previous link no longer works.");
    }, "No new link was made");
    act($("share-revoke"), function () {
      if (!window.confirm("Revoke the share link? Whoever has it can no longer open this report.")) {
        return Promise.resolve(false);
      }
      return R.request("DELETE", base + "/share");
    }, function (confirmed) {
      if (confirmed === false) return;
      showShareUrl("");
      hint.textContent = "This report's share link was revoked: nobody can open it. “New link” makes another.";
      R.showMessage(box, "success", "Share link revoked.");
    }, "The link was not revoked");
    act($("report-delete"), function () {
      if (!window.confirm("Delete this report and its share link? Its evaluations are kept.")) {
        return Promise.resolve(false);
      }
      return R.request("DELETE", base);
    }, function (confirmed) {
      if (confirmed !== false) window.location.assign("/reports");
    }, "The report was not deleted");
  }

  wireCopy();
})();
