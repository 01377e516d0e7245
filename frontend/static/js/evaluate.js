/* New evaluation: pick checkpoints (and a surrogate), a preset, the ε grid, the number of points,
 * AutoAttack's points and the points per shard; one POST /api/v1/evaluations per checkpoint. */
(function () {
  "use strict";
  var R = window.robaudit, V = window.robauditForms, h = R.h;
  var form = document.getElementById("eval-form");
  var list = document.getElementById("ev-checkpoints");
  var surrogate = document.getElementById("ev-surrogate");
  var dataset = document.getElementById("ev-dataset");
  var message = document.getElementById("eval-message");
  var results = document.getElementById("eval-results");
  var submit = document.getElementById("eval-submit");
  var preselect = form.getAttribute("data-preselect");
  var checkpoints = {};
  function $(id) { return document.getElementById(id); }

  function load() {
    R.get("/checkpoints", { limit: 1000 }).then(function (res) {
      var data = (res && res.data) || [];
      list.textContent = "";
      while (surrogate.options.length > 1) surrogate.remove(1);
      if (!data.length) {
        list.appendChild(h("p", { class: "muted" }, ["No checkpoints yet: ",
          h("a", { href: "/checkpoints" }, ["upload one"]), " or ", h("a", { href: "/trainings/new" }, ["train one"]), "."]));
        return;
      }
      data.forEach(function (ck) {
        checkpoints[ck.id] = ck;
        var desc = [ck.arch, ck.dataset, ck.method].filter(Boolean).join(" · ");
        list.appendChild(h("label", {}, [
          h("input", { type: "checkbox", name: "checkpoint", value: ck.id,
                       checked: String(ck.id) === preselect }),
          h("span", {}, ["#" + ck.id + " " + ck.name + " ", h("span", { class: "muted small" }, [desc])])
        ]));
        surrogate.appendChild(h("option", { value: ck.id }, ["#" + ck.id + " " + ck.name + (desc ? " (" + desc + ")" : "")]));
      });
    }).catch(function (err) {
      list.textContent = "";
      R.showError(message, err, "Could not load the checkpoints");
    });
  }

  function selected() {
    return Array.prototype.map.call(list.querySelectorAll('input[name="checkpoint"]:checked'), function (i) {
      return Number(i.value);
    });
  }

  function attacks() {
    return Array.prototype.map.call(form.querySelectorAll('input[name="attacks"]:checked'), function (i) { return i.value; });
  }

  function checks() {
    var firstBox = list.querySelector('input[name="checkpoint"]') || list;
    return [
      { input: firstBox, test: function () {
          var ids = selected();
          if (!ids.length) return "Tick at least one checkpoint.";
          if (!dataset.value) {
            var unknown = ids.filter(function (id) { return checkpoints[id] && !checkpoints[id].dataset; });
            if (unknown.length) return "Checkpoint #" + unknown[0] + " does not say which dataset it was trained on: choose the dataset below.";
          }
          return "";
        } },
      { input: $("ev-eps"), test: function () { return V.parseEpsList($("ev-eps").value, epsOptions()).error || ""; } },
      { input: $("ev-n"), test: function () {
          var raw = $("ev-n").value.trim();
          return raw && !/^[1-9]\d*$/.test(raw) ? "The number of test points must be a positive whole number." : "";
        } },
      { input: $("ev-aa"), test: function () {
          var raw = $("ev-aa").value.trim();
          return raw && !/^\d+$/.test(raw) ? "AutoAttack points must be a whole number: 0 for every point, or leave it blank for the preset's." : "";
        } },
      { input: $("ev-shard"), test: function () {
          var raw = $("ev-shard").value.trim();
          return raw && !/^[1-9]\d*$/.test(raw) ? "Points per shard must be a whole number of at least 1, or blank for one shard per worker." : "";
        } },
      { input: $("ev-steps"), test: function () { return V.parseIntList($("ev-steps").value, 1, 1000, "Each step count").error || ""; } },
      { input: surrogate, test: function () {
          var s = Number(surrogate.value);
          if (!s) return attacks().indexOf("transfer") >= 0 ? "The transfer attack needs a surrogate." : "";
          var ids = selected();
          if (ids.length === 1 && ids[0] === s) return "The surrogate must be a different model from the one evaluated.";
          var sd = checkpoints[s] && checkpoints[s].dataset;
          var clash = ids.filter(function (id) { return checkpoints[id] && checkpoints[id].dataset && sd && checkpoints[id].dataset !== sd; });
          return clash.length ? "The surrogate was trained on " + sd + " but checkpoint #" + clash[0] + " on " + checkpoints[clash[0]].dataset + "." : "";
        } }
    ];
  }

  // L-inf budgets are pixel changes in [0, 1]; L2 and L1 budgets are distances, checked by the server
  // against the image size.
  function epsOptions() {
    var norm = $("ev-norm") ? $("ev-norm").value : "linf";
    return norm === "linf" ? { maxCount: 64 } : { maxCount: 64, max: Infinity };
  }

  function body(checkpointId) {
    var out = { checkpoint_id: checkpointId, preset: $("ev-preset").value };
    // Only a norm other than the default is sent, so an L-inf request is what it always was.
    if ($("ev-norm") && $("ev-norm").value && $("ev-norm").value !== "linf") out.norm = $("ev-norm").value;
    var eps = V.parseEpsList($("ev-eps").value, epsOptions()).values;
    if (eps && eps.length) out.eps = eps;
    var steps = V.parseIntList($("ev-steps").value, 1, 1000).values;
    if (steps && steps.length) out.steps = steps;
    if ($("ev-n").value.trim()) out.n_examples = Number($("ev-n").value);
    if ($("ev-aa").value.trim()) out.aa_examples = Number($("ev-aa").value);         // 0: every point
    if ($("ev-shard").value.trim()) out.shard_size = Number($("ev-shard").value);    // blank: one per live worker
    if (surrogate.value && Number(surrogate.value) !== checkpointId) out.surrogate_id = Number(surrogate.value);
    if (dataset.value) out.dataset = dataset.value;
    var own = document.getElementById("ev-own-dataset");
    if (own && own.value) out.dataset_id = Number(own.value);
    var chosen = attacks();
    if (chosen.length) out.attacks = chosen;
    var name = $("ev-name").value.trim();
    if (name) out.name = name;
    return out;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    R.clearMessage(message);
    results.textContent = "";
    if (!V.validate(form, checks())) return;
    submit.disabled = true;
    var ids = selected();
    var created = [], failed = [];
    // One after the other, so the server's messages arrive in the order of the list.
    ids.reduce(function (chain, id) {
      return chain.then(function () {
        return R.post("/evaluations", body(id)).then(function (job) {
          created.push(job);
          results.appendChild(h("li", {}, ["Checkpoint #" + id + ": evaluation ",
            h("a", { href: "/evaluations/" + job.id }, ["#" + job.id]), " queued."]));
        }, function (err) {
          failed.push({ id: id, err: err });
          if (err.status === 401) throw err;   // no point trying the others
        });
      });
    }, Promise.resolve()).then(function () {
      if (failed.length) {
        var first = failed[0];
        R.showError(message, first.err, "Checkpoint #" + first.id + " was refused" + (failed.length > 1 ? " (and " + (failed.length - 1) + " more)" : ""));
        failed.slice(1).forEach(function (f) {
          results.appendChild(h("li", { style: "color:var(--fail)" }, ["Checkpoint #" + f.id + " refused: " + f.err.message]));
        });
      }
      if (created.length && !failed.length) {
        R.showMessage(message, "success", created.length === 1
          ? "Evaluation #" + created[0].id + " queued. Opening it…"
          : created.length + " evaluations queued. Follow them on the Jobs page.");
        window.location.href = created.length === 1 ? "/evaluations/" + created[0].id : "/jobs";
      }
    }).catch(function (err) {
      R.showError(message, err, "The server refused the evaluation");
    }).then(function () { submit.disabled = false; });
  });

  V.clearOnInput(form);
  document.addEventListener("robaudit:token", load);
  load();
})();
