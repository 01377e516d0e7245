/* Draws every chart on the page from the figure JSON the server embedded next to it.
 *
 * Markup: a div.plot with id X, followed by a JSON script element (type application/json) whose
 * data-figure-for attribute is X and whose text is the figure {data, layout}.
 * Used by the live pages, the share page and the exported HTML (where it is inlined).
 */
(function () {
  "use strict";

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };

  function renderOne(script) {
    var target = document.getElementById(script.getAttribute("data-figure-for"));
    if (!target || target.getAttribute("data-rendered") === "1") return;
    var fig;
    try {
      fig = JSON.parse(script.textContent);
    } catch (err) {
      target.innerHTML = '<p class="chart-error">This chart could not be read: ' + String(err) + "</p>";
      return;
    }
    if (typeof window.Plotly === "undefined") {
      target.innerHTML = '<p class="chart-error">plotly.js did not load, so this chart cannot be drawn.</p>';
      return;
    }
    target.setAttribute("data-rendered", "1");
    window.Plotly.newPlot(target, fig.data || [], fig.layout || {}, CONFIG).then(function () {
      target.setAttribute("data-traces", String((fig.data || []).length));
    });
  }

  function renderAll(root) {
    var scripts = (root || document).querySelectorAll('script[type="application/json"][data-figure-for]');
    Array.prototype.forEach.call(scripts, renderOne);
  }

  window.robauditCharts = { renderAll: renderAll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { renderAll(document); });
  } else {
    renderAll(document);
  }
})();
