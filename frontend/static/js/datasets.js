/* Datasets page: upload a test set (zip of class folders or .npz), list them, delete one. */
(function () {
  "use strict";
  var R = window.robaudit, h = R.h;

  var form = document.getElementById("ds-form");
  var fileInput = document.getElementById("ds-file");
  var fileError = document.getElementById("ds-file-error");
  var checkpoint = document.getElementById("ds-checkpoint");
  var resize = document.getElementById("ds-resize");
  var crop = document.getElementById("ds-crop");
  var message = document.getElementById("ds-message");
  var submit = document.getElementById("ds-submit");
  var rows = document.getElementById("ds-rows");
  var listMessage = document.getElementById("ds-list-message");

  function pixels(input, errorId) {
    var err = document.getElementById(errorId);
    var text = input.value.trim();
    err.textContent = "";
    if (!text) return true;
    var v = Number(text);
    if (!/^\d+$/.test(text) || v < 1 || v > 4096) {
      err.textContent = "A whole number of pixels, 1 to 4096.";
      return false;
    }
    return true;
  }

  function checkFile() {
    fileError.textContent = "";
    var file = fileInput.files && fileInput.files[0];
    if (!file) { fileError.textContent = "Choose a .zip or .npz file."; return false; }
    if (!/\.(zip|npz)$/i.test(file.name)) { fileError.textContent = "A test set is a .zip of class folders or an .npz."; return false; }
    var maxMb = Number(fileInput.getAttribute("data-max-mb"));
    if (maxMb && file.size > maxMb * 1024 * 1024) {
      fileError.textContent = "The file is " + R.fmtBytes(file.size) + ", over the server's " + maxMb + " MB limit.";
      return false;
    }
    return true;
  }

  function loadCheckpoints() {
    R.get("/checkpoints", { limit: 1000 }).then(function (res) {
      while (checkpoint.options.length > 1) checkpoint.remove(1);
      ((res && res.data) || []).forEach(function (ck) {
        checkpoint.appendChild(h("option", { value: ck.id }, ["#" + ck.id + " " + ck.name + (ck.dataset ? " (" + ck.dataset + ")" : "")]));
      });
    }).catch(function () { /* the picker is optional: the list below shows any read error */ });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    R.clearMessage(message);
    var ok = [checkFile(), pixels(resize, "ds-resize-error"), pixels(crop, "ds-crop-error")].every(Boolean);
    if (!ok) return;
    var file = fileInput.files[0];
    var data = new FormData();
    data.append("file", file, file.name);
    var name = document.getElementById("ds-name").value.trim();
    if (name) data.append("name", name);
    if (checkpoint.value) data.append("checkpoint_id", checkpoint.value);
    if (resize.value.trim()) data.append("resize", resize.value.trim());
    if (crop.value.trim()) data.append("crop", crop.value.trim());
    submit.disabled = true;
    R.showMessage(message, "info", "Uploading " + file.name + "…");
    R.upload("/datasets", data, function (loaded, total, phase) {
      if (phase === "checking") R.showMessage(message, "info", "Uploaded; the server is checking the images…");
    }).then(function (res) {
      var ds = res.data || {};
      R.showMessage(message, "success", (res.status === 200 ? "Already stored as dataset #" : "Uploaded dataset #") +
        ds.id + " “" + ds.name + "”: " + ds.n + " images, " + ds.channels + "×" + ds.height + "×" + ds.width + ".");
      form.reset();
      load();
    }).catch(function (err) {
      R.showError(message, err, "Upload refused");
    }).then(function () { submit.disabled = false; });
  });

  function remove(ds) {
    if (!window.confirm("Delete test set #" + ds.id + " “" + ds.name + "”?")) return;
    R.request("DELETE", "/datasets/" + ds.id).then(function () {
      R.showMessage(listMessage, "success", "Deleted test set #" + ds.id + ".");
      load();
    }).catch(function (err) { R.showError(listMessage, err, "Could not delete"); });
  }

  function row(ds) {
    var del = h("button", { type: "button", class: "small secondary", "data-delete": ds.id }, ["Delete"]);
    del.addEventListener("click", function () { remove(ds); });
    return h("tr", { id: "dataset-" + ds.id, "data-dataset-id": ds.id }, [
      h("td", {}, ["#" + ds.id]), h("td", {}, [ds.name]), h("td", { class: "num" }, [ds.n]),
      h("td", {}, [ds.channels + "×" + ds.height + "×" + ds.width + " " + ds.dtype +
        (ds.transform ? " (resize " + (ds.transform.resize || "–") + ", crop " + (ds.transform.crop || "–") + ")" : "")]),
      h("td", { class: "num" }, [ds.num_classes]),
      h("td", {}, [h("code", { title: ds.sha256 }, [ds.sha256.slice(0, 12)])]),
      h("td", {}, [ds.filename]), h("td", {}, [R.fmtDate(ds.created_at)]),
      h("td", {}, [h("a", { class: "button small", href: "/evaluations/new?dataset=" + ds.id }, ["Evaluate on it"]), " ", del])
    ]);
  }

  function load() {
    R.get("/datasets", { limit: 1000 }).then(function (res) {
      R.clearMessage(listMessage);
      rows.textContent = "";
      var list = (res && res.data) || [];
      if (!list.length) {
        rows.appendChild(h("tr", { class: "empty-row" }, [h("td", { colspan: "9" }, ["No test sets yet: upload one above."])]));
        return;
      }
      list.forEach(function (ds) { rows.appendChild(row(ds)); });
    }).catch(function (err) {
      rows.textContent = "";
      R.showError(listMessage, err, "Could not load the test sets");
    });
  }

  document.getElementById("ds-refresh").addEventListener("click", load);
  document.addEventListener("robaudit:token", function () { load(); loadCheckpoints(); });
  loadCheckpoints();
  load();
})();
