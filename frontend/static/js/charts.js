/* Draws every chart on the page from the figure JSON the server embedded next to it, and keeps the
 * report short, readable on a phone and printable.
 *
 * Markup: a div.plot with id X, followed by a JSON script element (type application/json) whose
 * data-figure-for attribute is X and whose text is the figure {data, layout}.
 * Used by the live pages, the share page and the exported HTML (where it is inlined).
 *
 * - Narrow charts (a phone, or print): the legend moves below the plot and the chart grows to hold it.
 * - A chart inside a closed <details> is drawn when the details open (it has no width before).
 * - Clicking a model's name in a legend (the group title) hides or shows all of that model's traces;
 *   clicking an attack shows or hides that attack alone (legend.groupclick "toggleitem").
 * - Printing opens every <details> and redraws the charts at print width; "Expand all" opens them too.
 */
(function () {
  "use strict";

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };
  var NARROW_PX = 640;      // below this chart width the legend goes under the plot
  var PRINT_WIDTH = 680;    // CSS px: an A4 or Letter page less its margins
  var figures = {};         // plot id -> the figure as the server sent it
  var printing = false;

  function legendEntries(fig) {
    var groups = {};
    var n = 0;
    (fig.data || []).forEach(function (t) {
      if (t.showlegend === false) return;
      n += 1;
      if (t.legendgroup && t.legendgrouptitle) groups[t.legendgroup] = true;
    });
    return { items: n, groups: Object.keys(groups).length };
  }

  function wrap(text, width) {
    // Plotly titles do not wrap: break long ones at a space.
    if (!text || text.length <= width || text.indexOf("<br>") >= 0) return text;
    var cut = text.lastIndexOf(" ", width);
    return cut > 0 ? text.slice(0, cut) + "<br>" + text.slice(cut + 1) : text;
  }

  // The layout for a chart `width` px wide: the server's, with the legend below the plot when narrow.
  function layoutFor(fig, width) {
    var layout = JSON.parse(JSON.stringify(fig.layout || {}));
    if (printing) layout.width = width;
    if (width >= NARROW_PX) return layout;
    var count = legendEntries(fig);
    var base = layout.height || 400;
    if (layout.showlegend !== false && count.items > 0) {
      // Below the x-axis title, as tall as it needs (draw() grows the chart to fit it).
      layout.legend = Object.assign({}, layout.legend || {}, {
        orientation: "h", x: 0, xanchor: "left", y: -0.22, yanchor: "top", font: { size: 11 },
        entrywidth: 104, maxheight: 4000,
        // Entries flow in rows (grouped, each would take a row); the colour names the model.
        traceorder: "normal"
      });
      layout.height = base;
    }
    layout.margin = Object.assign({}, layout.margin || {}, { l: 48, r: 12 });
    if (layout.title && layout.title.text) {
      layout.title = Object.assign({}, layout.title, { text: wrap(layout.title.text, 42), font: { size: 14 } });
      layout.margin.t = Math.max(layout.margin.t || 0, 64);
    }
    if (layout.yaxis && layout.yaxis.type === "category" && layout.annotations) {
      // The gap chart: each row's label above its marks, on two lines, from the left edge.
      layout.annotations.forEach(function (a) {
        if (typeof a.text === "string") a.text = a.text.replace(" (95% CI", "<br>(95% CI");
        Object.assign(a, { xref: "paper", x: 0, xanchor: "left", xshift: 0, yshift: 26 });
      });
      layout.height = Math.round((layout.height || 300) * 1.5);
    }
    return layout;
  }

  function widthOf(target) {
    return printing ? PRINT_WIDTH : (target.clientWidth || target.parentNode.clientWidth || 700);
  }

  // Clicking a legend group's title toggles every trace of that model; its hidden attacks come back
  // as they were (PGD-20 and the worst case, or whatever was shown before). Plotly gives a group title
  // no click target of its own, so the click is caught on the chart (it survives legend redraws).
  function onTitleClick(target) {
    return function (ev) {
      var node = ev.target && ev.target.closest ? ev.target.closest("g.traces") : null;
      var datum = node && node.__data__ && node.__data__[0];
      if (!datum || !datum.groupTitle) return;
      ev.stopPropagation();
      toggleGroup(target, datum.trace && datum.trace.legendgroup);
    };
  }

  function toggleGroup(target, group) {
      if (!group) return;
      var idx = [];
      target.data.forEach(function (t, i) { if (t.legendgroup === group) idx.push(i); });
      var shown = idx.filter(function (i) { return target.data[i].visible === undefined || target.data[i].visible === true; });
      target.__hiddenGroups = target.__hiddenGroups || {};
      if (shown.length) {
        target.__hiddenGroups[group] = shown;
        window.Plotly.restyle(target, { visible: "legendonly" }, shown);
      } else {
        var back = target.__hiddenGroups[group] || idx;
        window.Plotly.restyle(target, { visible: true }, back);
      }
  }

  // A legend under the plot takes its room from the plot: give the chart that room back.
  function fitLegend(target, layout) {
    var legend = target.querySelector(".legend");
    if (!legend) return;
    var extra = Math.ceil(legend.getBoundingClientRect().height);
    var want = (layout.height || 400) + extra;
    if (Math.abs(want - target._fullLayout.height) > 4) {
      return window.Plotly.relayout(target, { height: want });
    }
  }

  function draw(target) {
    var fig = figures[target.id];
    var closed = target.closest && target.closest("details:not([open])");
    if (closed) return;                                      // drawn when its details open
    var width = widthOf(target);
    var layout = layoutFor(fig, width);
    var data = fig.data || [];
    if (width < NARROW_PX) {
      // Entries flow in rows there, so the group titles would sit among them; bar numbers stand up.
      data = data.map(function (t) {
        if (!t.legendgrouptitle && t.type !== "bar") return t;
        var c = Object.assign({}, t);
        delete c.legendgrouptitle;
        if (c.type === "bar") c.textangle = -90;
        return c;
      });
    }
    var config = Object.assign({}, CONFIG, { responsive: !printing });
    var first = target.getAttribute("data-rendered") !== "1";
    target.setAttribute("data-rendered", "1");
    target.setAttribute("data-layout", width < NARROW_PX ? "narrow" : "wide");
    return window.Plotly.react(target, data, layout, config).then(function () {
      target.setAttribute("data-traces", String((fig.data || []).length));
      if (first) target.addEventListener("click", onTitleClick(target), true);
      if (width < NARROW_PX) return fitLegend(target, layout);
    });
  }

  function renderOne(script) {
    var target = document.getElementById(script.getAttribute("data-figure-for"));
    if (!target || figures[target.id]) return;
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
    figures[target.id] = fig;
    draw(target);
  }

  function plots(root) {
    return Array.prototype.filter.call((root || document).querySelectorAll("div.plot"), function (p) {
      return figures[p.id];
    });
  }

  function redraw(root) {
    plots(root).forEach(function (p) {
      if (p.closest && p.closest("details:not([open])")) return;
      draw(p);
    });
  }

  function renderAll(root) {
    var scripts = (root || document).querySelectorAll('script[type="application/json"][data-figure-for]');
    Array.prototype.forEach.call(scripts, renderOne);
  }

  // --- details: drawn on open; all opened for print and by "Expand all"
  var openedForPrint = [];

  function setAll(open) {
    Array.prototype.forEach.call(document.querySelectorAll("details.model-details"), function (d) {
      if (d.open !== open) d.open = open;
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-details-toggle]"), function (b) {
      b.setAttribute("aria-pressed", open ? "true" : "false");
      b.textContent = open ? "Collapse all" : "Expand all";
    });
  }

  function beforePrint() {
    if (printing) return;
    printing = true;
    openedForPrint = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    openedForPrint.forEach(function (d) { d.open = true; });
    redraw(document);        // Plotly draws synchronously; the promise only reports completion
  }

  function afterPrint() {
    if (!printing) return;
    printing = false;
    openedForPrint.forEach(function (d) { d.open = false; });
    openedForPrint = [];
    plots(document).forEach(function (p) {
      if (!(p.closest && p.closest("details:not([open])"))) draw(p);
    });
  }

  function wire() {
    document.addEventListener("toggle", function (ev) {
      var d = ev.target;
      if (d && d.tagName === "DETAILS" && d.open && !printing) redraw(d);
    }, true);
    Array.prototype.forEach.call(document.querySelectorAll("[data-details-toggle]"), function (b) {
      b.addEventListener("click", function () { setAll(b.getAttribute("aria-pressed") !== "true"); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-open-details]"), function (a) {
      a.addEventListener("click", function () {
        var d = document.getElementById(a.getAttribute("data-open-details"));
        if (d) d.open = true;
      });
    });
    window.addEventListener("beforeprint", beforePrint);
    window.addEventListener("afterprint", afterPrint);
    if (window.matchMedia) {
      var mq = window.matchMedia("print");
      var onChange = function (e) { if (e.matches) beforePrint(); };
      if (mq.addEventListener) mq.addEventListener("change", onChange);
    }
    // A narrow/wide switch (a phone turned sideways) re-lays the legends out.
    var lastNarrow = window.innerWidth < NARROW_PX;
    window.addEventListener("resize", function () {
      var narrow = window.innerWidth < NARROW_PX;
      if (narrow !== lastNarrow && !printing) { lastNarrow = narrow; redraw(document); }
    });
  }

  function start() {
    wire();
    renderAll(document);
  }

  window.robauditCharts = { renderAll: renderAll, expandAll: setAll, beforePrint: beforePrint, afterPrint: afterPrint };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
