/* Form checks before anything is sent: the browser's constraint validation (required, min, max, step,
 * pattern) plus per-form checks, with each message written under its field (aria-live) and the
 * first bad field focused. Forms use `novalidate` so the messages look the same everywhere.
 */
(function () {
  "use strict";

  function errorBoxFor(input) {
    var id = input.getAttribute("aria-describedby");
    var ids = id ? id.split(/\s+/) : [];
    for (var i = 0; i < ids.length; i++) {
      var el = document.getElementById(ids[i]);
      if (el && el.classList.contains("field-error")) return el;
    }
    return null;
  }

  function setFieldError(input, message) {
    var box = errorBoxFor(input);
    if (message) {
      input.setAttribute("aria-invalid", "true");
      if (box) box.textContent = message;
    } else {
      input.removeAttribute("aria-invalid");
      if (box) box.textContent = "";
    }
  }

  function labelOf(input) {
    var label = input.id ? document.querySelector('label[for="' + input.id + '"]') : null;
    return label ? label.textContent.replace(/\*/g, "").trim() : (input.name || "this field");
  }

  /* The browser's own constraint message, phrased with the field's label. */
  function constraintMessage(input) {
    var v = input.validity, name = labelOf(input);
    if (v.valueMissing) return name + " is required.";
    if (v.badInput || v.typeMismatch) return name + ": enter a valid " + (input.type === "number" ? "number" : "value") + ".";
    if (v.rangeUnderflow) return name + " must be at least " + input.min + ".";
    if (v.rangeOverflow) return name + " must be at most " + input.max + ".";
    if (v.stepMismatch) return name + (input.step === "1" || input.step === "" ? " must be a whole number." : " must be a multiple of " + input.step + ".");
    if (v.tooShort) return name + " must have at least " + input.minLength + " characters.";
    if (v.tooLong) return name + " must have at most " + input.maxLength + " characters.";
    if (v.patternMismatch) return input.title || (name + " is not in the expected format.");
    return input.validationMessage;
  }

  /* validate(form, checks) -> true when everything passes.
   * checks: [{input: element, test: function () { return "message" or "" }}], run after the built-in ones. */
  function validate(form, checks) {
    var first = null;
    var fields = form.querySelectorAll("input, select, textarea");
    Array.prototype.forEach.call(fields, function (input) {
      if (input.type === "hidden" || input.disabled) return;
      var msg = input.checkValidity() ? "" : constraintMessage(input);
      setFieldError(input, msg);
      if (msg && !first) first = input;
    });
    (checks || []).forEach(function (c) {
      if (!c.input || c.input.getAttribute("aria-invalid") === "true") return;
      var msg = c.test();
      if (msg) {
        setFieldError(c.input, msg);
        if (!first) first = c.input;
      }
    });
    if (first) first.focus();
    return !first;
  }

  /* "8/255, 16/255 0.3" -> {values: [0.0314, 0.0627, 0.3]} or {error: "..."}; each value in (min, max]. */
  function parseEpsList(text, opts) {
    opts = opts || {};
    var max = opts.max == null ? 1 : opts.max;
    var parts = String(text || "").split(/[\s,;]+/).filter(Boolean);
    if (!parts.length) return { values: [] };
    var values = [];
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i], v;
      var m = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(p);
      if (m) v = parseFloat(m[1]) / parseFloat(m[2]);
      else if (/^(\d+(\.\d*)?|\.\d+)(e-?\d+)?$/i.test(p)) v = parseFloat(p);
      else return { error: "“" + p + "” is not a number (write 0.03 or 8/255)." };
      if (!isFinite(v) || v <= 0 || v > max) return { error: "ε = " + p + " is outside (0, " + max + "] (pixel scale [0, 1])." };
      values.push(v);
    }
    if (opts.maxCount && values.length > opts.maxCount) return { error: "At most " + opts.maxCount + " values." };
    return { values: values };
  }

  /* "20, 100" -> {values: [20, 100]}; whole numbers in [min, max]. */
  function parseIntList(text, min, max, what) {
    var parts = String(text || "").split(/[\s,;]+/).filter(Boolean);
    var values = [];
    for (var i = 0; i < parts.length; i++) {
      if (!/^\d+$/.test(parts[i])) return { error: "“" + parts[i] + "” is not a whole number." };
      var v = parseInt(parts[i], 10);
      if (v < min || v > max) return { error: (what || "Each value") + " must be between " + min + " and " + max + "." };
      values.push(v);
    }
    return { values: values };
  }

  /* A number field's value, or null when empty. */
  function num(input) {
    return input && input.value !== "" ? Number(input.value) : null;
  }

  /* Live clearing: once the user edits a flagged field, drop its message. */
  function clearOnInput(form) {
    form.addEventListener("input", function (ev) {
      if (ev.target.getAttribute && ev.target.getAttribute("aria-invalid") === "true") setFieldError(ev.target, "");
    });
    form.addEventListener("change", function (ev) {
      if (ev.target.getAttribute && ev.target.getAttribute("aria-invalid") === "true") setFieldError(ev.target, "");
    });
  }

  window.robauditForms = {
    validate: validate, setFieldError: setFieldError, parseEpsList: parseEpsList,
    parseIntList: parseIntList, num: num, clearOnInput: clearOnInput
  };
})();
