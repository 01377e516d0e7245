/* Checkpoints page: the list, and the upload (drag-and-drop, recognition of the file, progress bar,
 * metadata and preprocessing form, the clean-accuracy check of the answer). */
(function () {
  "use strict";
  var R = window.robaudit, V = window.robauditForms, h = R.h;

  var ALLOWED = /\.(safetensors|pt|pth|onnx)$/i;
  var MAX_HEADER = 100 * 1024 * 1024;   // the safetensors format's own cap on its JSON header

  var form = document.getElementById("upload-form");
  var fileInput = document.getElementById("ck-file");
  var dropzone = document.getElementById("dropzone");
  var info = document.getElementById("ck-file-info");
  var inspectBox = document.getElementById("ck-inspect");
  var arch = document.getElementById("ck-arch");
  var dataset = document.getElementById("ck-dataset");
  var name = document.getElementById("ck-name");
  var archKwargs = document.getElementById("ck-arch-kwargs");
  var preprocessing = document.getElementById("ck-preprocessing");
  var customNorm = document.getElementById("ck-custom-norm");
  var mean = document.getElementById("ck-mean");
  var std = document.getElementById("ck-std");
  var inputRange = document.getElementById("ck-input-range");
  var message = document.getElementById("upload-message");
  var cleanBox = document.getElementById("upload-clean");
  var next = document.getElementById("upload-next");
  var auditLink = document.getElementById("upload-audit");
  var progressWrap = document.getElementById("upload-progress-wrap");
  var progress = document.getElementById("upload-progress");
  var progressLabel = document.getElementById("upload-progress-label");
  var submit = document.getElementById("upload-submit");
  var cancel = document.getElementById("upload-cancel");
  var rows = document.getElementById("ck-rows");
  var listMessage = document.getElementById("list-message");

  var chosen = null;          // the File to upload
  var embedded = null;        // robaudit metadata read from the file, or null
  var recognised = null;      // the server's answer to /checkpoints/inspect, or null
  var inspecting = null;      // Promise while the file is being read and recognised
  var xhr = null;

  // ------------------------------------------------------------------ reading the file
  /* Reads a .safetensors header (8-byte little-endian length, then JSON) without reading the weights:
   * {meta} when it carries robaudit metadata, else {tensors: name -> shape} for recognition. */
  function readHeader(file) {
    if (file.size < 9) return Promise.resolve({ note: "This file is too small to be a safetensors checkpoint." });
    return file.slice(0, 8).arrayBuffer().then(function (buf) {
      var dv = new DataView(buf);
      var n = dv.getUint32(0, true) + dv.getUint32(4, true) * 4294967296;
      if (n < 2 || n > MAX_HEADER || 8 + n > file.size) {
        return { note: "The safetensors header looks damaged (it claims " + n + " bytes); the server will check the file." };
      }
      return file.slice(8, 8 + n).text().then(function (text) {
        var header = JSON.parse(text);
        var raw = header.__metadata__ && header.__metadata__.robaudit;
        if (raw) return { meta: JSON.parse(raw) };
        var tensors = {};
        Object.keys(header).forEach(function (key) {
          if (key !== "__metadata__" && header[key] && Array.isArray(header[key].shape)) tensors[key] = header[key].shape;
        });
        return { tensors: tensors };
      });
    }).catch(function (err) {
      return { note: "The file's header could not be read (" + err.message + "); the server will check the file." };
    });
  }

  /* Asks the server which catalogue architecture the file is: from the header's shapes alone for a
   * .safetensors file (a 1 GB network is recognised without sending its weights), else from the file. */
  function recognise(file, tensors) {
    if (tensors) return R.post("/checkpoints/inspect", { tensors: tensors });
    var data = new FormData();
    data.append("file", file, file.name);
    return R.upload("/checkpoints/inspect", data).then(function (res) { return res.data; });
  }

  function setRequired(sel, required, emptyLabel) {
    sel.required = required;
    sel.options[0].textContent = required ? "choose…" : emptyLabel;
    document.getElementById(sel.id + "-req").hidden = !required;
  }

  /* What the form must ask for: nothing the file's metadata says; the architecture unless the file was
   * recognised (or is an ONNX graph, which is its own architecture); the dataset and preprocessing always. */
  function updateRequired() {
    var bare = !!chosen && !embedded;
    var onnx = !!chosen && /\.onnx$/i.test(chosen.name);
    setRequired(arch, bare && !recognised && !onnx, bare ? "recognised from the file" : "from the file's metadata");
    setRequired(dataset, bare, "from the file's metadata");
    setRequired(preprocessing, bare, "from the file's metadata");
  }

  function selectValue(sel, value) {
    if (!Array.prototype.some.call(sel.options, function (o) { return o.value === value; })) {
      sel.appendChild(h("option", { value: value }, [value]));   // e.g. a timm: name
    }
    sel.value = value;
  }

  function showRecognition(file, rec) {
    if (!rec.detected_arch) {   // an ONNX graph: its own architecture, nothing to pick
      R.showMessage(inspectBox, "info", "An ONNX graph brings its own architecture (" + rec.num_classes +
        " classes). Choose the dataset and how its inputs were normalised.");
    } else {
      recognised = rec;
      selectValue(arch, rec.detected_arch);
      var kwargs = rec.arch_kwargs || {};
      archKwargs.value = Object.keys(kwargs).length ? JSON.stringify(kwargs) : "";
      var bits = [rec.num_classes + " classes", rec.in_channels + " input channel" + (rec.in_channels === 1 ? "" : "s")];
      if (rec.input_size) bits.push(rec.input_size + "×" + rec.input_size);
      var fits0 = rec.datasets || [];
      R.showMessage(inspectBox, "info", "Recognised as " + rec.detected_arch + " (" + bits.join(", ") + "). " +
        (fits0.length ? "Datasets it fits: " + fits0.join(", ") + "." : "No known dataset has these classes and channels."));
      inspectBox.setAttribute("data-arch", rec.detected_arch);
    }
    var fits = rec.datasets || [];
    if (fits.length && fits.indexOf(dataset.value) < 0) dataset.value = fits[0];
  }

  function showUnrecognised(file, err) {
    recognised = null;
    inspectBox.removeAttribute("data-arch");
    if (err && err.status === 401) {
      R.showMessage(inspectBox, "info", "Set the API token so the server can recognise this file, or choose its " +
        "architecture below.");
    } else {
      R.showMessage(inspectBox, "error", (/\.onnx$/i.test(file.name) ? "This ONNX graph cannot be used: " :
        "Not a known architecture: ") + (err ? err.message : "no answer"));
    }
  }

  function syncCustom() {
    var custom = preprocessing.value === "custom";
    customNorm.hidden = !custom;
    mean.required = std.required = custom;
  }

  function choose(file) {
    chosen = file || null;
    embedded = null;
    recognised = null;
    info.textContent = "";
    R.clearMessage(inspectBox);
    inspectBox.removeAttribute("data-arch");
    V.setFieldError(fileInput, "");
    if (!file) { updateRequired(); return; }
    R.clearMessage(message);
    R.clearMessage(cleanBox);
    next.hidden = true;
    var base = file.name + " · " + R.fmtBytes(file.size);
    if (!ALLOWED.test(file.name)) {
      V.setFieldError(fileInput, "“" + file.name + "” is not a checkpoint: use a .safetensors, .pt, .pth or .onnx file.");
      info.textContent = base;
      return;
    }
    info.textContent = base + " · reading…";
    var safetensors = /\.safetensors$/i.test(file.name);
    inspecting = (safetensors ? readHeader(file) : Promise.resolve({})).then(function (res) {
      if (chosen !== file) return;
      if (res.meta) {
        embedded = res.meta;
        var bits = [embedded.arch, embedded.dataset, embedded.method].filter(Boolean);
        info.textContent = base + " · robaudit metadata found: " + bits.join(" · ");
        if (!name.value && embedded.name) name.value = embedded.name;
        updateRequired();
        return;
      }
      info.textContent = base + (res.note ? " · " + res.note : " · no robaudit metadata: recognising…");
      updateRequired();
      if (res.note) return;
      if (safetensors && !Object.keys(res.tensors || {}).length) {
        showUnrecognised(file, { message: "the file has no tensors." });
        return;
      }
      return recognise(file, safetensors ? res.tensors : null).then(function (rec) {
        if (chosen !== file) return;
        if (rec.embedded && rec.metadata) {   // a .pt with robaudit metadata: nothing to ask
          embedded = rec.metadata;
          R.showMessage(inspectBox, "info", "robaudit metadata found: " +
            [embedded.arch, embedded.dataset, embedded.method].filter(Boolean).join(" · "));
          return;
        }
        showRecognition(file, rec);
      }, function (err) {
        if (chosen !== file) return;
        showUnrecognised(file, err);
      }).then(function () {
        if (chosen !== file) return;
        info.textContent = base + (embedded ? "" : " · no robaudit metadata: choose how its inputs were normalised.");
        updateRequired();
      });
    });
  }

  fileInput.addEventListener("change", function () { choose(fileInput.files[0]); });
  preprocessing.addEventListener("change", syncCustom);

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
  function jsonList(input, label) {
    return { input: input, test: function () {
      if (preprocessing.value !== "custom") return "";
      try {
        var v = JSON.parse(input.value);
        if (!Array.isArray(v) || !v.length || v.some(function (x) { return typeof x !== "number" || !isFinite(x); })) {
          return label + ": write a JSON list of numbers, one per input channel, e.g. [0.5, 0.5, 0.5].";
        }
        if (label === "Std" && v.some(function (x) { return x <= 0; })) return "Std: every value must be positive.";
        return "";
      } catch (e) { return label + ": not valid JSON (" + e.message + ")."; }
    } };
  }

  function checks() {
    return [
      { input: fileInput, test: function () {
          if (!chosen) return "Choose or drop a checkpoint file.";
          if (!ALLOWED.test(chosen.name)) return "“" + chosen.name + "” is not a checkpoint: use a .safetensors, .pt, .pth or .onnx file.";
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
        } },
      jsonList(mean, "Mean"),
      jsonList(std, "Std")
    ];
  }

  function busy(on) {
    submit.disabled = on;
    cancel.hidden = !on;
    progressWrap.hidden = !on;
  }

  /* The clean accuracy measured at upload, where the user looks next: near chance is an error-style alert. */
  function showCleanCheck(ck) {
    var c = ck.clean_check;
    if (!c) { R.clearMessage(cleanBox); return; }
    if (!c.ran) {
      R.showMessage(cleanBox, "warn", "The clean-accuracy check could not run: " + (c.reason || "no reason given") + ".");
    } else {
      var text = "Clean accuracy " + R.fmtPct(c.accuracy) + " on the first " + c.n + " test points of " +
        (ck.dataset || "the dataset") + " (chance " + R.fmtPct(c.chance) + ").";
      if (c.suspect) {
        R.showMessage(cleanBox, "error", text + " " + (c.message || "Near chance: wrong preprocessing, class order or dataset?"));
      } else {
        R.showMessage(cleanBox, "success", text);
      }
    }
    cleanBox.setAttribute("data-suspect", c.ran && c.suspect ? "1" : "0");
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    R.clearMessage(message);
    (inspecting || Promise.resolve()).then(function () {
      if (!V.validate(form, checks())) return;
      var data = new FormData();
      data.append("file", chosen, chosen.name);
      if (name.value.trim()) data.append("name", name.value.trim());
      // The recognised architecture, left as proposed, is not sent: the server recognises it again and
      // records it as detected (an architecture the user chose is checked against the file instead).
      var asRecognised = recognised && arch.value === recognised.detected_arch &&
        archKwargs.value.trim() === (Object.keys(recognised.arch_kwargs || {}).length ? JSON.stringify(recognised.arch_kwargs) : "");
      if (arch.value && !asRecognised) data.append("arch", arch.value);
      if (dataset.value) data.append("dataset", dataset.value);
      if (archKwargs.value.trim() && !asRecognised) data.append("arch_kwargs", archKwargs.value.trim());
      if (preprocessing.value) data.append("preprocessing", preprocessing.value);
      if (preprocessing.value === "custom") {
        data.append("mean", mean.value.trim());
        data.append("std", std.value.trim());
      }
      if (inputRange.value) data.append("input_range", inputRange.value);
      busy(true);
      progress.value = 0;
      progressLabel.textContent = "Uploading " + chosen.name + "…";
      R.upload("/checkpoints", data, function (loaded, total, phase) {
        if (phase === "checking") {
          progress.removeAttribute("value");   // indeterminate while the server checks the weights
          progressLabel.textContent = "Uploaded; the server is checking the weights and measuring clean accuracy…";
        } else if (total) {
          progress.value = Math.round(100 * loaded / total);
          progressLabel.textContent = "Uploading " + chosen.name + ": " + progress.value + " % (" +
            R.fmtBytes(loaded) + " of " + R.fmtBytes(total) + ")";
        }
      }, function (x) { xhr = x; }).then(function (res) {
        var ck = res.data || {};
        R.showMessage(message, "success", (res.status === 200 ? "Already stored as checkpoint #" : "Uploaded checkpoint #") +
          ck.id + " “" + ck.name + "” (" + [ck.arch, ck.dataset, ck.preprocessing, ck.method].filter(Boolean).join(", ") + ").");
        form.reset();
        choose(null);
        syncCustom();
        showCleanCheck(ck);
        auditLink.href = "/evaluations/new?checkpoint=" + ck.id;
        next.hidden = false;
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
  function cleanCell(ck) {
    var c = ck.clean_check;
    if (!c) return h("td", { class: "num muted" }, ["–"]);
    if (!c.ran) return h("td", { class: "num small", title: c.reason || "" }, ["not run"]);
    return h("td", { class: "num", title: c.message || ("chance " + R.fmtPct(c.chance)) }, [
      R.fmtPct(c.accuracy), c.suspect ? h("span", { class: "pill warn small" }, [" near chance"]) : null]);
  }

  function row(ck) {
    var meta = ck.metadata || {};
    var hp = meta.hyperparameters || {};
    var delta = hp.label_smoothing;
    return h("tr", { "data-checkpoint": ck.id }, [
      h("td", { class: "num" }, [String(ck.id)]),
      h("th", { scope: "row" }, [ck.name, ck.embedded_metadata ? null : h("span", { class: "muted small", title: "metadata given at upload" }, [" (metadata from form)"])]),
      h("td", {}, [ck.arch || "–", ck.detected_arch ? h("span", { class: "muted small", title: "recognised from the file's keys and shapes" }, [" (recognised)"]) : null]),
      h("td", {}, [ck.dataset || "–"]),
      h("td", {}, [ck.preprocessing || (ck.embedded_metadata ? "from metadata" : "–")]),
      cleanCell(ck),
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
        rows.appendChild(h("tr", { class: "empty-row" }, [h("td", { colspan: "13" }, ["No checkpoints yet: upload one above, or train one."])]));
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
