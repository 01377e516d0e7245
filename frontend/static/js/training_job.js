/* A training job's page: live status, and the training curves redrawn after every finished epoch. */
(function () {
  "use strict";
  var R = window.robaudit, h = R.h;
  var wrap = document.getElementById("training-charts");
  var id = wrap.getAttribute("data-training-job");
  var epochs = Number(wrap.getAttribute("data-epochs") || 0);

  function redraw() {
    return fetch("/ui/jobs/" + id + "/training-figure", { headers: R.getToken() ? { Authorization: "Bearer " + R.getToken() } : {} })
      .then(function (res) { return res.ok ? res.json() : null; })
      .then(function (data) {
        if (!data || !data.figure) return;
        var figure = document.getElementById("training-curves-figure");
        var plot = document.getElementById("training-curves");
        if (!plot) {   // first epoch: replace the "no epoch yet" note by a plot
          figure.textContent = "";
          plot = h("div", { class: "plot", id: "training-curves", role: "img", "aria-label": "Training curves" });
          figure.appendChild(plot);
        }
        window.Plotly.react(plot, data.figure.data, data.figure.layout, { responsive: true, displaylogo: false });
        plot.setAttribute("data-traces", String(data.figure.data.length));
      });
  }

  function showOutput(job) {
    var links = document.getElementById("output-links");
    if (job.output_checkpoint_id && !links.querySelector("a")) {
      links.appendChild(h("a", { class: "button", href: "/evaluations/new?checkpoint=" + job.output_checkpoint_id },
                          ["Evaluate the trained model"]));
    }
  }

  window.robauditJobs.liveCard(function (job, last) {
    var n = (job.metrics || []).length;
    if (n !== epochs || (job.status !== last && n)) {
      epochs = n;
      redraw();
    }
    showOutput(job);
  });
})();
