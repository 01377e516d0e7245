/* Checkpoints page: the list, and the upload (drag-and-drop, progress bar, metadata form). */
(function () {
  "use strict";
  var R = window.robaudit, V = window.robauditForms, h = R.h;

  var ALLOWED = /\.(safetensors|pt|pth)$/i;
  var MAX_HEADER = 100 * 1024 * 1024;   // the safetensors format's own cap on its JSON header

  var form = document.getElementById("upload-form");
  var fileInput = document.getElementById("ck-file");
  var dropzone = document.getElementById("dropzone");
  var info = document.getElementById("ck-file-info");
  var arch = document.getElementById("ck-arch");
  var dataset = document.getElementById("ck-dataset");
  var name = document.getElementById("ck-name");
  var archKwargs = document.getElementById("ck-arch-kwargs");
  var message = document.getElementById("upload-message");
  var progressWrap = document.getElementById("upload-progress-wrap");
  var progress = document.getElementById("upload-progress");
  var progressLabel = document.getElementById("upload-progress-label");
  var submit = document.getElementById("upload-submit");
  var cancel = document.getElementById("upload-cancel");
  var rows = document.getElementById("ck-rows");
  var listMessage = document.getElementById("list-message");

  var chosen = null;          // the File to upload
  var embedded = null;        // robaudit metadata read from the file, or null
  var inspecting = null;      // Promise while the header is being read
  var xhr = null;

  // ------------------------------------------------------------------ reading the file's own metadata
  /* Reads the safetensors header (8-byte little-endian length, then JSON) to find robaudit metadata,
   * so the form asks for arch and dataset only when the file does not carry them. */
  function inspect(file) {
    if (!/\.safetensors$/i.test(file.name)) {
      return Promise.resolve({ meta: null, note: "A .pt/.pth state_dict carries no robaudit metadata: choose the architecture and the dataset." });
    }
    if (file.size < 9) return Promise.resolve({ meta: null, note: "This file is too small to be a safetensors checkpoint." });
    return file.slice(0, 8).arrayBuffer().then(function (buf) {
      var dv = new DataView(buf);
      var n = dv.getUint32(0, true) + dv.getUint32(4, true) * 4294967296;
      if (n < 2 || n > MAX_HEADER || 8 + n > file.size) {
        return { meta: null, note: "The safetensors header looks damaged (it claims " + n + " bytes); the server will check the file." };
      }
      return file.slice(8, 8 + n).text().then(function (text) {
        var header = JSON.parse(text);
        var raw = header.__metadata__ && header.__metadata__.robaudit;
        if (!raw) return { meta: null, note: "No robaudit metadata in this file: choose the architecture and the dataset." };
        return { meta: JSON.parse(raw), note: "" };
      });
    }).catch(function (err) {
      return { meta: null, note: "The file's header could not be read (" + err.message + "); the server will check the file." };
    });
  }

  function setRequired(required) {
    [arch, dataset].forEach(function (sel) {
      sel.required = required;
      sel.options[0].textContent = required ? "choose…" : "from the file's metadata";
      document.getElementById(sel.id + "-req").hidden = !required;
    });
  }

  function choose(file) {
    chosen = file || null;
    embedded = null;
    info.textContent = "";
    V.setFieldError(fileInput, "");
    if (!file) { setRequired(false); return; }
    R.clearMessage(message);
    var parts = [file.name + " · " + R.fmtBytes(file.size)];
    if (!ALLOWED.test(file.name)) {
      V.setFieldError(fileInput, "“" + file.name + "” is not a checkpoint: use a .safetensors, .pt or .pth file.");
      info.textContent = parts[0];
      return;
    }
    info.textContent = parts[0] + " · reading metadata…";
    inspecting = inspect(file).then(function (res) {
      if (chosen !== file) return;
      embedded = res.meta;
      setRequired(!embedded);
      if (embedded) {
        var bits = [embedded.arch, embedded.dataset, embedded.method].filter(Boolean);
        info.textContent = parts[0] + " · robaudit metadata found: " + bits.join(" · ");
        if (!name.value && embedded.name) name.value = embedded.name;
      } else {
        info.textContent = parts[0] + (res.note ? " · " + res.note : "");
      }
    });
  }

  fileInput.addEventListener("change", function () { choose(fileInput.files[0]); });

  ["dragenter", "dragover"].forEach(function (type) {
    dropzone.addEventListener(type, function (ev) {
      ev.preventDefault();
      dropzone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    dropzone.addEventListener(type, function (ev) {
      ev.preventDefault();
      dropzone.classList.remove("dragover");
    });
  });
  dropzone.addEventListener("drop", function (ev) {
    var files = ev.dataTransfer && ev.dataTransfer.files;
    if (!files || !files.length) return;
    if (files.length > 1) {
      V.setFieldError(fileInput, "Drop one file at a time.");
      return;
    }
    try { fileInput.files = files; } catch (e) { /* older browsers: keep our own reference */ }
    choose(files[0]);
  });
  dropzone.addEventListener("click", function (ev) {
    if (ev.target === dropzone || ev.target.classList.contains("big")) fileInput.click();
  });

  // ------------------------------------------------------------------ upload
  function checks() {
    return [
      { input: fileInput, test: function () {
          if (!chosen) return "Choose or drop a checkpoint file.";
          if (!ALLOWED.test(chosen.name)) return "“" + chosen.name + "” is not a checkpoint: use a .safetensors, .pt or .pth file.";
          if (chosen.size === 0) return "This file is empty.";
          var maxMb = Number(fileInput.getAttribute("data-max-mb") || 0);
          if (maxMb && chosen.size > maxMb * 1024 * 1024) return "This file is larger than the server's " + maxMb + " MB limit.";
          return "";
        } },
      { input: archKwargs, test: function () {
          if (!archKwargs.value.trim()) return "";
          try {
            var v = JSON.parse(archKwargs.value);
            return v && typeof v === "object" && !Array.isArray(v) ? "" : "Write a JSON object, e.g. {\"depth\": 28}.";
          } catch (e) { return "Not valid JSON: " + e.message; }
        } }
    ];
  }

  function busy(on) {
    submit.disabled = on;
    cancel.hidden = !on;
    progressWrap.hidden = !on;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    R.clearMessage(message);
    (inspecting || Promise.resolve()).then(function () {
      if (!V.validate(form, checks())) return;
      var data = new FormData();
      data.append("file", chosen, chosen.name);
      if (name.value.trim()) data.append("name", name.value.trim());
      if (arch.value) data.append("arch", arch.value);
      if (dataset.value) data.append("dataset", dataset.value);
      if (archKwargs.value.trim()) data.append("arch_kwargs", archKwargs.value.trim());
      busy(true);
      progress.value = 0;
      progressLabel.textContent = "Uploading " + chosen.name + "…";
      R.upload("/checkpoints", data, function (loaded, total, phase) {
        if (phase === "checking") {
          progress.removeAttribute("value");   // indeterminate while the server checks the weights
          progressLabel.textContent = "Uploaded; the server is checking the weights…";
        } else if (total) {
          progress.value = Math.round(100 * loaded / total);
          progressLabel.textContent = "Uploading " + chosen.name + ": " + progress.value + " % (" +
            R.fmtBytes(loaded) + " of " + R.fmtBytes(total) + ")";
        }
      }, function (x) { xhr = x; }).then(function (res) {
        var ck = res.data || {};
        R.showMessage(message, "success", (res.status === 200 ? "Already stored as checkpoint #" : "Uploaded checkpoint #") +
          ck.id + " “" + ck.name + "” (" + [ck.arch, ck.dataset, ck.method].filter(Boolean).join(", ") + ").");
        form.reset();
        choose(null);
        load();
      }).catch(function (err) {
        R.showError(message, err, "Upload failed");
      }).then(function () {
        busy(false);
        progress.value = 0;
        xhr = null;
      });
    });
  });

  cancel.addEventListener("click", function () { if (xhr) xhr.abort(); });
  V.clearOnInput(form);

  // ------------------------------------------------------------------ list
  function row(ck) {
    var meta = ck.metadata || {};
    var hp = meta.hyperparameters || {};
    var delta = hp.label_smoothing;
    return h("tr", { "data-checkpoint": ck.id }, [
      h("td", { class: "num" }, [String(ck.id)]),
      h("th", { scope: "row" }, [ck.name, ck.embedded_metadata ? null : h("span", { class: "muted small", title: "metadata given at upload" }, [" (metadata from form)"])]),
      h("td", {}, [ck.arch || "–"]),
      h("td", {}, [ck.dataset || "–"]),
      h("td", {}, [ck.method || meta.method || "–"]),
      h("td", { class: "num" }, [delta == null ? "–" : String(delta)]),
      h("td", {}, [ck.source === "training" && ck.training_job_id
        ? h("a", { href: "/jobs/" + ck.training_job_id }, ["training #" + ck.training_job_id]) : (ck.source || "upload")]),
      h("td", { class: "num" }, [R.fmtBytes(ck.size_bytes)]),
      h("td", { class: "mono small", title: ck.sha256 }, [(ck.sha256 || "").slice(0, 12)]),
      h("td", { class: "small" }, [R.fmtDate(ck.created_at)]),
      h("td", {}, [h("a", { class: "button small secondary", href: "/evaluations/new?checkpoint=" + ck.id }, ["Evaluate"])])
    ]);
  }

  function load() {
    R.get("/checkpoints", { limit: 1000 }).then(function (res) {
      R.clearMessage(listMessage);
      rows.textContent = "";
      var list = (res && res.data) || [];
      if (!list.length) {
        rows.appendChild(h("tr", { class: "empty-row" }, [h("td", { colspan: "11" }, ["No checkpoints yet: upload one above, or train one."])]));
        return;
      }
      list.forEach(function (ck) { rows.appendChild(row(ck)); });
    }).catch(function (err) {
      rows.textContent = "";
      R.showError(listMessage, err, "Could not load the checkpoints");
    });
  }

  document.getElementById("ck-refresh").addEventListener("click", load);
  document.addEventListener("robaudit:token", load);
  load();
})();
