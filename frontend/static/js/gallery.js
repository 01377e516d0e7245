/* The evaluation page's adversarial-example gallery: pages of 24 from GET /evaluations/{id}/gallery,
 * loaded when the "Show more" button scrolls into view (or is clicked), filtered by attack, true
 * class and "missed by PGD-20". A filter change starts over; answers to an older filter are dropped.
 */
(function () {
  "use strict";

  var PAGE = 24;
  var section = document.getElementById("gallery");
  if (!section) return;
  var api = window.robaudit, h = api.h;
  var id = section.getAttribute("data-evaluation");
  var grid = document.getElementById("gallery-grid");
  var more = document.getElementById("gallery-more");
  var status = document.getElementById("gallery-status");
  var message = document.getElementById("gallery-message");
  var attack = document.getElementById("gallery-attack");
  var cls = document.getElementById("gallery-class");
  var missed = document.getElementById("gallery-missed");
  var state = { generation: 0, offset: 0, total: null, loading: false };

  function query() {
    return { offset: state.offset, limit: PAGE, attack: attack.value, "class": cls.value,
             missed: missed.getAttribute("aria-pressed") === "true" ? "true" : "" };
  }

  function stepText(item) {
    var parts = [item.attack];
    if (item.detail) parts.push(item.detail);
    if (item.step >= 0) parts.push("step " + item.step);
    parts.push("ε = " + (+item.eps).toPrecision(3));
    return parts.join(", ");
  }

  function card(item) {
    var alt = "test point " + item.index + ", true " + item.true_name + ", predicted " + item.predicted_name;
    var images = ["clean", "adversarial", "perturbation"].map(function (kind) {
      return h("figure", { "class": "gallery-panel" }, [
        h("img", { src: item.images[kind], alt: kind + " image of " + alt, "data-kind": kind,
                   width: 96, height: 96 }),
        h("figcaption", { text: kind === "perturbation" ? "perturbation ×" : kind })
      ]);
    });
    return h("article", { "class": "gallery-item" + (item.missed ? " missed" : ""), "data-index": item.index,
                          "data-attack": item.attack, "data-true": item.true, "data-predicted": item.predicted,
                          "data-missed": item.missed ? "1" : "0" }, [
      h("div", { "class": "gallery-panels" }, images),
      h("p", { "class": "small" }, [
        h("strong", { text: "#" + item.index }), " true ", h("strong", { text: item.true_name }),
        " → predicted ", h("strong", { "class": "gallery-pred", text: item.predicted_name })
      ]),
      h("p", { "class": "small muted", text: stepText(item) + (item.missed ? " · missed by PGD-20" : "") })
    ]);
  }

  function load() {
    if (state.loading || (state.total !== null && state.offset >= state.total)) return;
    state.loading = true;
    var generation = state.generation;
    status.textContent = "Loading…";
    api.get("/evaluations/" + id + "/gallery", query()).then(function (page) {
      if (generation !== state.generation) return;
      api.clearMessage(message);
      page.items.forEach(function (item) { grid.appendChild(card(item)); });
      state.offset += page.items.length;
      state.total = page.total;
      status.textContent = page.total === 0 ? "No adversarial example matches these filters."
        : "Showing " + state.offset + " of " + page.total + ".";
      more.hidden = state.offset >= page.total;
      section.setAttribute("data-loaded", String(state.offset));
      section.setAttribute("data-total", String(page.total));
    }).catch(function (err) {
      if (generation !== state.generation) return;
      status.textContent = "";
      api.showError(message, err, "The gallery could not be loaded");
    }).then(function () {
      if (generation === state.generation) state.loading = false;
      if (!more.hidden && visible(more)) load();   // the next page is still in view: keep filling
    });
  }

  function visible(el) {
    var box = el.getBoundingClientRect();
    return box.top < window.innerHeight && box.bottom > 0;
  }

  function restart() {
    state.generation += 1;
    state.offset = 0;
    state.total = null;
    state.loading = false;
    section.removeAttribute("data-loaded");
    section.removeAttribute("data-total");
    while (grid.firstChild) grid.removeChild(grid.firstChild);
    more.hidden = true;
    load();
  }

  attack.addEventListener("change", restart);
  cls.addEventListener("change", restart);
  missed.addEventListener("click", function () {
    var on = missed.getAttribute("aria-pressed") !== "true";
    missed.setAttribute("aria-pressed", on ? "true" : "false");
    restart();
  });
  more.addEventListener("click", load);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) load();
    }, { rootMargin: "400px" }).observe(more);
  }
  load();
})();
