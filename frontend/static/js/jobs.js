/* Jobs: the live list (/jobs) and the live status card on a job's own page.
 *
 * Polls the API: every 2 s while something is queued or running, every 15 s otherwise, and not at all
 * while the tab is hidden. Cancel and retry call POST /jobs/{id}/cancel|retry with the API token.
 */
(function () {
  "use strict";
  var R = window.robaudit, h = R.h;
  var ACTIVE = { queued: true, running: true };

  function fraction(job) {
    var p = job.progress || {};
    if (job.status === "succeeded") return 1;
    if (p.fraction != null) return Math.max(0, Math.min(1, p.fraction));
    return null;
  }

  function progressCell(job) {
    var f = fraction(job), p = job.progress || {};
    var pct = f == null ? null : Math.round(100 * f);
    var label = pct != null ? pct + " %"
      : job.status === "queued" ? "waiting for a worker"
      : job.status === "running" ? "starting…"
      : "stopped before any progress";
    var bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                         "aria-valuenow": pct == null ? null : String(pct), "aria-label": "progress of job " + job.id,
                         "data-status": job.status }, [h("span", { style: "width:" + (pct == null ? 0 : pct) + "%" })]);
    var detail = [label];
    if (p.total && job.status === "running") detail.push(p.current + " / " + p.total);
    if (p.stage) detail.push(p.stage);
    if (job.cancel_requested && ACTIVE[job.status]) detail.push("cancelling…");
    return h("div", {}, [bar, h("div", { class: "small muted" }, [detail.join(" · ")])]);
  }

  function etaText(job) {
    if (!ACTIVE[job.status]) {
      if (job.finished_at && job.started_at) {
        return "took " + R.fmtDuration((new Date(job.finished_at) - new Date(job.started_at)) / 1000);
      }
      return "–";
    }
    var eta = job.progress && job.progress.eta_seconds != null ? job.progress.eta_seconds : job.eta_seconds;
    return eta == null ? (job.status === "queued" ? "queued" : "estimating…") : "≈ " + R.fmtDuration(eta) + " left";
  }

  /* The job's headline numbers (its "summary"), e.g. clean_accuracy 0.98 -> "clean 98.0 %". */
  function headline(job) {
    var s = job.summary || {};
    if (s.final && typeof s.final === "object") s = s.final;    // trainings: the last epoch's metrics
    var keys = Object.keys(s).filter(function (k) { return /acc|eps/.test(k) && !/^eval_/.test(k); });
    var out = [];
    keys.slice(0, 4).forEach(function (k) {
      var v = s[k];
      // An L2 or L1 job's budgets are distances: say which (L-inf jobs read as before).
      var epsLabel = s.norm && s.norm !== "linf" ? " ε (" + String(s.norm).toUpperCase() + ")" : " ε";
      var label = k.replace(/_acc(uracy)?$/, "").replace(/^pgd(\d+)/, "PGD-$1").replace(/_eps$/, epsLabel).replace(/_/g, " ");
      if (typeof v === "number") {
        out.push(label + " " + (/acc/i.test(k) && v <= 1 ? R.fmtPct(v) : String(Math.round(v * 1e4) / 1e4)));
      } else if (typeof v === "string" && v.length < 40) {
        out.push(label + " " + v);
      }
    });
    return out.join(" · ") || "–";
  }

  function pageFor(job) {
    return job.kind === "evaluation" ? "/evaluations/" + job.id : "/jobs/" + job.id;
  }

  /* Cancel / retry buttons; errors (401 included) go to `box`. */
  function actions(job, box, after) {
    var wrap = h("div", { class: "actions", style: "margin:0" }, []);
    function act(kind, label, cls) {
      var btn = h("button", { type: "button", class: "small " + cls, "data-action": kind, "data-job": job.id }, [label]);
      btn.addEventListener("click", function () {
        if (kind === "cancel" && !window.confirm("Cancel job #" + job.id + "? A running job stops after its current batch or epoch and can be retried later.")) return;
        btn.disabled = true;
        R.clearMessage(box);
        R.post("/jobs/" + job.id + "/" + kind).then(function (updated) {
          R.showMessage(box, "success", kind === "cancel"
            ? (updated && updated.status === "cancelled" ? "Job #" + job.id + " cancelled." : "Cancel requested for job #" + job.id + ": it stops at its next batch.")
            : "Job #" + job.id + " queued again; it resumes from its last saved state.");
          if (after) after();
        }).catch(function (err) {
          R.showError(box, err, (kind === "cancel" ? "Cancel" : "Retry") + " of job #" + job.id + " failed");
          btn.disabled = false;
        });
      });
      wrap.appendChild(btn);
    }
    if (ACTIVE[job.status]) act("cancel", job.cancel_requested ? "Cancelling…" : "Cancel", "danger");
    if (job.status === "failed" || job.status === "cancelled") act("retry", "Retry", "secondary");
    return wrap;
  }

  // ------------------------------------------------------------------ shards
  /* One row per entry of job.shards (an evaluation split over workers), the same cells as the server
   * draws in _job_card.html (views.ShardRow): #, points, status, worker, attempt, progress, ETA, error. */
  var SHARD_STATUSES = { queued: true, running: true, succeeded: true, failed: true, cancelled: true };

  function shardPercent(s) {
    if (s.status === "succeeded") return 100;
    if (s.total > 0 && s.done != null) return Math.max(0, Math.min(100, Math.round(100 * s.done / s.total)));
    return 0;
  }

  /* start..end is half-open: (0, 500) holds points 0–499. */
  function shardPoints(s) {
    if (s.start == null || s.end == null) return "–";
    return s.end > s.start ? s.start + "–" + (s.end - 1) : s.start + " (empty)";
  }

  function shardEta(s) {
    if (s.status === "queued") return "waiting";
    if (s.status !== "running") return "–";
    return s.eta_seconds == null ? "estimating…" : "≈ " + R.fmtDuration(s.eta_seconds);
  }

  function shardRow(s, i) {
    var index = s.index == null ? i : s.index;
    var pct = shardPercent(s);
    var attempt = s.attempt == null ? "–" : s.max_attempts ? s.attempt + "/" + s.max_attempts : String(s.attempt);
    return h("tr", { "data-shard": index, "data-status": s.status }, [
      h("td", { class: "num" }, [String(index)]),
      h("td", { class: "num" }, [shardPoints(s)]),
      h("td", {}, [h("span", { class: "pill " + (SHARD_STATUSES[s.status] ? s.status : "unknown") }, [String(s.status)])]),
      h("td", { class: "mono small" }, [s.worker || "–"]),
      h("td", { class: "num" }, [attempt]),
      h("td", {}, [h("progress", { max: "100", value: String(pct), "aria-label": "progress of shard " + index }, [pct + " %"]),
                   h("div", { class: "small muted" }, [pct + " %" + (s.stage ? " · " + s.stage : "")])]),
      h("td", { class: "small" }, [shardEta(s)]),
      h("td", { class: "small shard-error" }, [s.error || ""])
    ]);
  }

  /* "4 shards: 2 running, 1 queued, 1 succeeded" (views.shard_summary). */
  function shardSummary(shards) {
    var counts = {}, order = ["running", "queued", "succeeded", "failed", "cancelled", "unknown"];
    shards.forEach(function (s) {
      var k = SHARD_STATUSES[s.status] ? s.status : "unknown";
      counts[k] = (counts[k] || 0) + 1;
    });
    var parts = order.filter(function (k) { return counts[k]; }).map(function (k) { return counts[k] + " " + k; });
    return shards.length + " shard" + (shards.length === 1 ? "" : "s") + ": " + parts.join(", ");
  }

  /* Repaints #job-shards from the job's shards; hides it while there are none (trainings, unplanned evaluations). */
  function paintShards(job) {
    var wrap = document.getElementById("job-shards");
    if (!wrap) return;
    var shards = (Array.isArray(job.shards) ? job.shards : []).filter(function (s) { return s && typeof s === "object"; });
    shards.sort(function (a, b) { return (a.index || 0) - (b.index || 0); });
    wrap.hidden = !shards.length;
    var rows = document.getElementById("job-shards-rows");
    rows.textContent = "";
    shards.forEach(function (s, i) { rows.appendChild(shardRow(s, i)); });
    document.getElementById("job-shards-summary").textContent = shards.length ? shardSummary(shards) : "";
  }

  // ------------------------------------------------------------------ polling
  function poller(fn) {
    var timer = null, stopped = false;
    function schedule(active) {
      if (stopped) return;
      clearTimeout(timer);
      timer = setTimeout(tick, active ? 2000 : 15000);
    }
    function tick() {
      if (document.hidden) { schedule(false); return; }
      fn().then(schedule, function () { schedule(false); });
    }
    document.addEventListener("visibilitychange", function () { if (!document.hidden) tick(); });
    return { start: tick, now: tick, stop: function () { stopped = true; clearTimeout(timer); } };
  }

  // ------------------------------------------------------------------ the list page
  function listPage() {
    var rows = document.getElementById("jobs-rows");
    var box = document.getElementById("jobs-message");
    var filter = document.getElementById("jobs-filter");
    var updated = document.getElementById("jobs-updated");
    var p;

    function render(list) {
      rows.textContent = "";
      if (!list.length) {
        rows.appendChild(h("tr", { class: "empty-row" }, [h("td", { colspan: "9" }, ["No jobs yet."])]));
        return;
      }
      list.forEach(function (job) {
        rows.appendChild(h("tr", { "data-job": job.id, "data-status": job.status }, [
          h("td", { class: "num" }, [h("a", { href: pageFor(job) }, ["#" + job.id])]),
          h("td", {}, [job.kind]),
          h("td", {}, [h("a", { href: pageFor(job) }, [job.name || (job.kind + " " + job.id)]),
                       job.error ? h("div", { class: "small", style: "color:var(--fail)" }, [job.error.slice(0, 200)]) : null]),
          h("td", {}, [h("span", { class: "pill " + job.status }, [job.status]),
                       job.attempt > 1 ? h("div", { class: "small muted" }, ["attempt " + job.attempt + " of " + job.max_attempts]) : null]),
          h("td", {}, [progressCell(job)]),
          h("td", { class: "small" }, [etaText(job)]),
          h("td", { class: "small" }, [headline(job)]),
          h("td", { class: "small" }, [R.fmtDate(job.created_at)]),
          h("td", {}, [actions(job, box, function () { p.now(); })])
        ]));
      });
    }

    function load() {
      return R.get("/jobs", { limit: 100, kind: filter.value || null }).then(function (res) {
        var list = (res && res.data) || [];
        render(list);
        updated.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
        return list.some(function (j) { return ACTIVE[j.status]; });
      }, function (err) {
        R.showError(box, err, "Could not load the jobs");
        throw err;
      });
    }
    p = poller(load);
    filter.addEventListener("change", function () { p.now(); });
    document.addEventListener("robaudit:token", function () { p.now(); });
    p.start();
  }

  // ------------------------------------------------------------------ one job's live card
  /* <div id="job-live" data-job="ID" data-status="..."> with #job-progress, #job-eta, #job-status,
   * #job-actions, #job-shards and #job-message inside. Calls onChange(job, previous status) after each poll. */
  function liveCard(onChange) {
    var card = document.getElementById("job-live");
    if (!card) return;
    var id = card.getAttribute("data-job");
    var last = card.getAttribute("data-status");
    var box = document.getElementById("job-message");
    var p;
    function paint(job) {
      var st = document.getElementById("job-status");
      st.textContent = "";
      st.appendChild(h("span", { class: "pill " + job.status }, [job.status]));
      var prog = document.getElementById("job-progress");
      prog.textContent = "";
      prog.appendChild(progressCell(job));
      document.getElementById("job-eta").textContent = etaText(job);
      var acts = document.getElementById("job-actions");
      acts.textContent = "";
      acts.appendChild(actions(job, box, function () { p.now(); }));
      paintShards(job);
      var err = document.getElementById("job-error");
      if (err) {
        err.hidden = !job.error;
        err.textContent = job.error ? "Error: " + job.error : "";
      }
    }
    function load() {
      return R.get("/jobs/" + id).then(function (job) {
        paint(job);
        if (onChange) onChange(job, last);
        last = job.status;
        card.setAttribute("data-status", job.status);
        return !!ACTIVE[job.status];
      }, function (err) {
        R.showError(box, err, "Could not refresh job #" + id);
        throw err;
      });
    }
    p = poller(load);
    p.start();
    return p;
  }

  window.robauditJobs = { liveCard: liveCard, progressCell: progressCell, etaText: etaText, paintShards: paintShards };
  if (document.getElementById("jobs-rows")) listPage();
})();
