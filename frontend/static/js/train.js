/* New training: method-specific fields, checks, POST /api/v1/trainings, then off to the job page. */
(function () {
  "use strict";
  var R = window.robaudit, V = window.robauditForms;
  var form = document.getElementById("train-form");
  var method = document.getElementById("tr-method");
  var dataset = document.getElementById("tr-dataset");
  var arch = document.getElementById("tr-arch");
  var message = document.getElementById("train-message");
  var submit = document.getElementById("train-submit");
  var datasets = JSON.parse(form.getAttribute("data-datasets") || "[]");
  function $(id) { return document.getElementById(id); }

  /* Fields that do not apply to the chosen method are hidden and disabled (so they are neither
   * checked nor sent: the server refuses options a method ignores). */
  function syncMethod() {
    Array.prototype.forEach.call(form.querySelectorAll("[data-methods]"), function (field) {
      var on = field.getAttribute("data-methods").split(" ").indexOf(method.value) >= 0;
      field.hidden = !on;
      Array.prototype.forEach.call(field.querySelectorAll("input, select"), function (i) { i.disabled = !on; });
    });
  }

  function syncDataset() {
    var info = datasets.filter(function (d) { return d.name === dataset.value; })[0];
    if (!info) return;
    var eps = info.default_eps;
    var k = Math.round(eps * 255);
    $("tr-eps").placeholder = Math.abs(eps * 255 - k) < 1e-6 && Math.abs(Math.round(eps * 1000) / 1000 - eps) > 1e-9
      ? k + "/255" : String(eps);
    // smallcnn is the MNIST-sized network; the ResNets expect 3-channel 32x32 images.
    if (info.in_channels === 1 && arch.value !== "smallcnn") arch.value = "smallcnn";
    if (info.in_channels === 3 && arch.value === "smallcnn") arch.value = "preactresnet18";
  }

  method.addEventListener("change", syncMethod);
  dataset.addEventListener("change", syncDataset);
  syncMethod();
  syncDataset();
  V.clearOnInput(form);

  function single(input) {
    var parsed = V.parseEpsList(input.value);
    if (parsed.error) return { error: parsed.error };
    if (parsed.values.length > 1) return { error: "Give one value." };
    return { value: parsed.values.length ? parsed.values[0] : null };
  }

  function checks() {
    var epochs = V.num($("tr-epochs"));
    return [
      { input: $("tr-eps"), test: function () { return single($("tr-eps")).error || ""; } },
      { input: $("tr-alpha"), test: function () {
          if ($("tr-alpha").disabled) return "";
          var a = single($("tr-alpha"));
          if (a.error) return a.error.replace("ε", "α");
          var e = single($("tr-eps")).value;
          return a.value != null && e != null && a.value > 2.5 * e ? "α is more than 2.5 ε: the attack would overshoot the ε-ball every step." : "";
        } },
      { input: $("tr-ls"), test: function () {
          var v = V.num($("tr-ls"));
          return v != null && !(v >= 0 && v < 1) ? "Label smoothing δ must be in [0, 1)." : "";
        } },
      { input: $("tr-milestones"), test: function () {
          var parsed = V.parseIntList($("tr-milestones").value, 1, 100000, "Each milestone");
          if (parsed.error) return parsed.error;
          var bad = parsed.values.filter(function (m) { return epochs && m >= epochs; });
          return bad.length ? "Milestone " + bad[0] + " is not before the last epoch (" + epochs + "): it would never take effect." : "";
        } },
      { input: arch, test: function () {
          var info = datasets.filter(function (d) { return d.name === dataset.value; })[0];
          return info && info.in_channels === 3 && arch.value === "smallcnn" ? "smallcnn is for 1-channel 28×28 images (MNIST); choose a ResNet for " + dataset.value + "." : "";
        } }
    ];
  }

  function body() {
    var hp = {};
    function put(key, value) { if (value != null && value !== "") hp[key] = value; }
    put("epochs", V.num($("tr-epochs")));
    put("batch_size", V.num($("tr-batch")));
    put("lr", V.num($("tr-lr")));
    var ms = V.parseIntList($("tr-milestones").value, 1, 100000).values;
    if (ms && ms.length) hp.lr_milestones = ms;
    put("n_train", V.num($("tr-ntrain")));
    put("eval_examples", V.num($("tr-evalex")));
    put("seed", V.num($("tr-seed")));
    put("eps", single($("tr-eps")).value);
    if (!$("tr-alpha").disabled) put("alpha", single($("tr-alpha")).value);
    if (!$("tr-steps").disabled) put("steps", V.num($("tr-steps")));
    put("label_smoothing", V.num($("tr-ls")));
    if (!$("tr-beta").disabled) put("trades_beta", V.num($("tr-beta")));
    var sk = $("tr-sinkhorn");
    if (sk && !sk.disabled) put("sinkhorn", sk.value);
    var out = { method: method.value, dataset: dataset.value, arch: arch.value, hyperparameters: hp };
    if ($("tr-name").value.trim()) out.name = $("tr-name").value.trim();
    return out;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    R.clearMessage(message);
    if (!V.validate(form, checks())) return;
    submit.disabled = true;
    R.post("/trainings", body()).then(function (job) {
      R.showMessage(message, "success", "Training #" + job.id + " queued. Opening its page…");
      window.location.href = "/jobs/" + job.id;
    }).catch(function (err) {
      R.showError(message, err, "The server refused this training");
      submit.disabled = false;
    });
  });
})();
