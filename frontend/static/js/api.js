/* The API client shared by every page: the bearer token, requests, error messages, small DOM helpers.
 *
 * The token lives in localStorage; it is mirrored to a SameSite=Strict cookie only so that
 * server-rendered pages can read data when the server requires the token for reads too.
 * The API itself only ever sees the token in the Authorization header.
 */
(function () {
  "use strict";

  var API = "/api/v1";
  var TOKEN_KEY = "robaudit.apiToken";
  var COOKIE = "robaudit_token";

  // ------------------------------------------------------------------ token
  function getToken() {
    try { return window.localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function setToken(token) {
    token = (token || "").trim();
    try {
      if (token) window.localStorage.setItem(TOKEN_KEY, token);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lasts for this page only */ }
    var secure = window.location.protocol === "https:" ? "; Secure" : "";
    document.cookie = COOKIE + "=" + (token ? encodeURIComponent(token) : "") + "; Path=/; SameSite=Strict" +
      (token ? "; Max-Age=31536000" : "; Max-Age=0") + secure;
    renderTokenState();
    document.dispatchEvent(new CustomEvent("robaudit:token", { detail: { set: !!token } }));
  }

  function renderTokenState() {
    var box = document.getElementById("token-state");
    if (!box) return;
    var set = !!getToken();
    box.setAttribute("data-set", set ? "1" : "0");
    document.getElementById("token-label").textContent = set ? "API token set" : "no API token";
  }

  function openTokenDialog(message) {
    var dialog = document.getElementById("token-dialog");
    if (!dialog) return;
    var err = document.getElementById("token-error");
    err.textContent = message || "";
    document.getElementById("token-input").value = getToken();
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    document.getElementById("token-input").focus();
  }

  function wireTokenDialog() {
    var dialog = document.getElementById("token-dialog");
    if (!dialog) return;
    var input = document.getElementById("token-input");
    var err = document.getElementById("token-error");
    document.getElementById("token-open").addEventListener("click", function () { openTokenDialog(""); });
    document.getElementById("token-cancel").addEventListener("click", function () { dialog.close(); });
    document.getElementById("token-clear").addEventListener("click", function () {
      setToken("");
      input.value = "";
      dialog.close();
    });
    document.getElementById("token-form").addEventListener("submit", function (ev) {
      var value = input.value.trim();
      if (!value) {
        ev.preventDefault();
        err.textContent = "Paste the token first.";
        input.setAttribute("aria-invalid", "true");
        return;
      }
      if (/\s/.test(value)) {
        ev.preventDefault();
        err.textContent = "A token has no spaces or line breaks: check what was pasted.";
        input.setAttribute("aria-invalid", "true");
        return;
      }
      input.removeAttribute("aria-invalid");
      err.textContent = "";
      setToken(value);
    });
    renderTokenState();
  }

  // ------------------------------------------------------------------ errors
  function ApiError(status, message, detail) {
    this.name = "ApiError";
    this.status = status;
    this.message = message;
    this.detail = detail;
  }
  ApiError.prototype = Object.create(Error.prototype);

  /* FastAPI answers {"detail": "..."} or, for schema errors, {"detail": [{loc, msg}, ...]}. */
  function formatDetail(detail) {
    if (detail == null) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map(function (d) {
        if (!d || typeof d !== "object") return String(d);
        var loc = (d.loc || []).filter(function (p) { return p !== "body"; }).join(".");
        return (loc ? loc + ": " : "") + (d.msg || JSON.stringify(d));
      }).join("; ");
    }
    if (typeof detail === "object" && detail.message) return String(detail.message);
    return JSON.stringify(detail);
  }

  function errorFromResponse(status, text) {
    var detail = null;
    try { detail = JSON.parse(text).detail; } catch (e) { detail = null; }
    var message = formatDetail(detail) || (text && text.length < 300 ? text : "") || ("HTTP " + status);
    return new ApiError(status, message, detail);
  }

  function authHeaders(extra) {
    var headers = extra || {};
    var token = getToken();
    if (token) headers["Authorization"] = "Bearer " + token;
    return headers;
  }

  /* request(method, path, {json, query}) -> Promise of parsed JSON (or null for 204). */
  function request(method, path, opts) {
    opts = opts || {};
    var url = (path.indexOf("/") === 0 && path.indexOf(API) !== 0 ? API : "") + path;
    if (opts.query) {
      var q = Object.keys(opts.query).filter(function (k) { return opts.query[k] != null && opts.query[k] !== ""; })
        .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(opts.query[k]); }).join("&");
      if (q) url += (url.indexOf("?") >= 0 ? "&" : "?") + q;
    }
    var init = { method: method, headers: authHeaders({ "Accept": "application/json" }) };
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    }
    return fetch(url, init).then(function (res) {
      return res.text().then(function (text) {
        if (!res.ok) throw errorFromResponse(res.status, text);
        if (!text) return null;
        try { return JSON.parse(text); } catch (e) { return text; }
      });
    }, function (err) {
      throw new ApiError(0, "The server could not be reached (" + err.message + "). Is robaudit serve running?");
    });
  }

  /* Multipart upload with progress events (fetch has no upload progress; XMLHttpRequest does).
   * onXhr(xhr) receives the request so the caller can abort it. */
  function upload(path, formData, onProgress, onXhr) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      if (onXhr) onXhr(xhr);
      xhr.open("POST", API + path);
      var headers = authHeaders({ "Accept": "application/json" });
      Object.keys(headers).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      xhr.upload.addEventListener("progress", function (ev) {
        if (onProgress) onProgress(ev.loaded, ev.lengthComputable ? ev.total : 0, "upload");
      });
      xhr.upload.addEventListener("load", function () { if (onProgress) onProgress(1, 1, "checking"); });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          try { resolve({ status: xhr.status, data: JSON.parse(xhr.responseText) }); }
          catch (e) { resolve({ status: xhr.status, data: null }); }
        } else {
          reject(errorFromResponse(xhr.status, xhr.responseText));
        }
      });
      xhr.addEventListener("error", function () {
        reject(new ApiError(0, "The upload was interrupted: the server could not be reached."));
      });
      xhr.addEventListener("abort", function () { reject(new ApiError(0, "The upload was cancelled.")); });
      xhr.send(formData);
    });
  }

  /* Puts an error where the user is looking (the box next to the form), with a hint for 401s. */
  function showError(box, err, prefix) {
    if (!box) return;
    box.className = "alert error";
    box.setAttribute("role", "alert");
    box.textContent = "";
    var strong = document.createElement("strong");
    strong.textContent = (prefix || "Error") + (err && err.status ? " (HTTP " + err.status + ")" : "") + ": ";
    box.appendChild(strong);
    box.appendChild(document.createTextNode(err && err.message ? err.message : String(err)));
    if (err && err.status === 401) {
      var hint = document.createElement("div");
      hint.className = "small";
      hint.appendChild(document.createTextNode(getToken()
        ? "The stored API token was refused. "
        : "No API token is set in this browser. "));
      var btn = document.createElement("button");
      btn.type = "button";
      btn.className = "small secondary";
      btn.textContent = "Set API token";
      btn.addEventListener("click", function () { openTokenDialog(err.message); });
      hint.appendChild(btn);
      box.appendChild(hint);
    }
  }

  function showMessage(box, kind, text) {
    if (!box) return;
    box.className = "alert " + kind;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.textContent = text;
  }

  function clearMessage(box) {
    if (!box) return;
    box.className = "alert";
    box.textContent = "";
  }

  // ------------------------------------------------------------------ DOM and formatting helpers
  /* h("td", {class: "num"}, ["text", node]) builds elements without innerHTML (no injection). */
  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k.indexOf("on") === 0 && typeof v === "function") node.addEventListener(k.slice(2), v);
      // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
      else if (k === "style") node.style.cssText = String(v);
      else node.setAttribute(k, v === true ? "" : String(v));
    });
    (children || []).forEach(function (c) {
      if (c == null || c === false) return;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
    return node;
  }

  function fmtPct(v, digits) {
    if (v == null || isNaN(v)) return "–";
    return (100 * v).toFixed(digits == null ? 1 : digits) + " %";
  }

  function fmtDuration(seconds) {
    if (seconds == null || isNaN(seconds)) return "–";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    var hr = Math.floor(m / 60);
    return hr + " h " + (m % 60) + " min";
  }

  function fmtBytes(n) {
    if (n == null) return "–";
    var units = ["B", "KB", "MB", "GB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function fmtDate(iso) {
    if (!iso) return "–";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  /* Downloads through fetch (so the token goes along when reads need it), falling back to the link. */
  function wireDownloads(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("a[data-download]"), function (a) {
      a.addEventListener("click", function (ev) {
        if (!getToken()) return;   // reads are open: let the browser follow the link
        ev.preventDefault();
        var box = document.getElementById(a.getAttribute("data-error-box") || "");
        fetch(a.href, { headers: authHeaders({}) }).then(function (res) {
          if (!res.ok) return res.text().then(function (t) { throw errorFromResponse(res.status, t); });
          return res.blob();
        }).then(function (blob) {
          var url = URL.createObjectURL(blob);
          var tmp = h("a", { href: url, download: a.getAttribute("download") || "" });
          document.body.appendChild(tmp);
          tmp.click();
          tmp.remove();
          setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
        }).catch(function (err) { showError(box, err, "Download failed"); });
      });
    });
  }

  window.robaudit = {
    API: API, getToken: getToken, setToken: setToken, openTokenDialog: openTokenDialog,
    request: request, get: function (p, q) { return request("GET", p, { query: q }); },
    post: function (p, body) { return request("POST", p, { json: body === undefined ? {} : body }); },
    upload: upload, ApiError: ApiError, formatDetail: formatDetail,
    showError: showError, showMessage: showMessage, clearMessage: clearMessage,
    h: h, fmtPct: fmtPct, fmtDuration: fmtDuration, fmtBytes: fmtBytes, fmtDate: fmtDate,
    wireDownloads: wireDownloads
  };

  // A token stored before the cookie mirror existed (or cleared cookies): re-sync.
  if (getToken() && document.cookie.indexOf(COOKIE + "=") < 0) setToken(getToken());
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { wireTokenDialog(); wireDownloads(document); });
  } else {
    wireTokenDialog();
    wireDownloads(document);
  }
})();
