// ckptview: upload with progress, copy-link buttons, module tree expand/collapse, and
// messages when an htmx request fails. No inline scripts anywhere (the CSP forbids them).
(function () {
  "use strict";

  function humanBytes(n) {
    if (n < 1000) return n + " B";
    const units = ["kB", "MB", "GB", "TB"];
    let u = -1;
    while (n >= 999.5 && u < units.length - 1) {
      n /= 1000;
      u++;
    }
    return (n >= 99.95 ? n.toFixed(0) : n >= 9.995 ? n.toFixed(1) : n.toFixed(2)) + " " + units[u];
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // findingWords puts an API finding in the words the server's pages use (views.FindingRow):
  // the loader's detail is "calls x.y(...)", "imports x.y, which ..." or another sentence.
  function findingWords(f) {
    const danger = f.severity === "danger";
    const global = f.global || "";
    let detail = (f.detail || "").trim();
    let call = "";
    if (detail.startsWith("calls ")) {
      call = detail.slice(6);
      detail = "";
    } else if (global && detail.startsWith(global + "(")) {
      call = detail;
      detail = "";
    } else if (detail === "imports " + global || detail.startsWith("imports " + global + ",") || detail.startsWith("imports " + global + " ")) {
      detail = "";
    }
    let w;
    if (danger && call) w = { verb: "calls", call: call, tail: " when unpickled" };
    else if (danger) w = { verb: "imports", call: global, tail: ", which can run code or touch the system, when unpickled" };
    else if (call) w = { verb: "calls", call: call, tail: " when unpickled (not on the allowlist; shown here as an opaque object, never called)" };
    else w = { verb: "imports", call: global, tail: " (not on the allowlist; shown as an opaque object, never called)" };
    if (!w.call) w.call = "an unnamed global";
    w.detail = detail;
    return w;
  }

  // findingList builds the same markup as the server's finding list, from API JSON.
  function findingList(findings) {
    const ul = el("ul", "finding-list");
    for (const f of findings) {
      const sev = f.severity === "danger" ? "danger" : "warning";
      const w = findingWords(f);
      const li = el("li", "finding finding-" + sev);
      li.dataset.testid = "finding";
      li.dataset.severity = sev;
      li.appendChild(el("span", "badge badge-" + sev, sev === "danger" ? "Danger" : "Warning"));
      const text = el("span", "finding-text");
      text.appendChild(document.createTextNode("this file " + w.verb + " "));
      text.appendChild(el("code", "finding-call", w.call));
      text.appendChild(document.createTextNode(w.tail));
      if (f.path) {
        text.appendChild(document.createTextNode(" — at "));
        text.appendChild(el("code", "", f.path));
      }
      li.appendChild(text);
      if (w.detail) li.appendChild(el("span", "finding-detail", w.detail));
      ul.appendChild(li);
    }
    return ul;
  }

  function setupUpload(form) {
    const input = form.querySelector("input[type=file]");
    const zone = form.querySelector(".dropzone");
    const bar = form.querySelector(".progress");
    const progress = bar.querySelector("progress");
    const text = bar.querySelector(".progress-text");
    const errorBox = form.querySelector(".upload-error");
    const submit = form.querySelector("button[type=submit]");
    const token = form.querySelector("input[name=token]");
    const max = Number(form.dataset.maxUpload || 0);
    let busy = false;

    function showError(message, findings) {
      busy = false;
      submit.disabled = false;
      bar.hidden = true;
      errorBox.replaceChildren(el("strong", "", message));
      if (Array.isArray(findings) && findings.length > 0) {
        errorBox.appendChild(el("p", "", "The file could not be opened, but this is what it would have run:"));
        errorBox.appendChild(findingList(findings));
      }
      errorBox.hidden = false;
    }

    // upload sends one file, or several in one request: a sharded checkpoint (its index and
    // shards) or files that belong together, which the server opens as one.
    function upload(list) {
      const files = Array.from(list || []);
      if (busy || files.length === 0) return;
      const total = files.reduce(function (n, f) { return n + f.size; }, 0);
      const file = files[0];
      if (max > 0 && total > max) {
        showError((files.length > 1 ? files.length + " files are " : file.name + " is ") + humanBytes(total) + "; the limit is " + humanBytes(max) + ".");
        return;
      }
      if (token && !token.value.trim()) {
        showError("Enter the upload token first: this server takes uploads only with it.");
        token.focus();
        return;
      }
      busy = true;
      submit.disabled = true;
      errorBox.hidden = true;
      bar.hidden = false;
      progress.value = 0;
      text.textContent = "Uploading " + (files.length > 1 ? files.length + " files" : file.name) + "…";
      const started = performance.now();

      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.api);
      xhr.responseType = "json";
      xhr.setRequestHeader("Accept", "application/json");
      if (token) xhr.setRequestHeader("Authorization", "Bearer " + token.value.trim());
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        progress.value = (e.loaded / e.total) * 100;
        const secs = (performance.now() - started) / 1000;
        let line = humanBytes(e.loaded) + " / " + humanBytes(e.total);
        if (secs > 0.5) line += " · " + humanBytes(e.loaded / secs) + "/s";
        text.textContent = line;
      });
      xhr.upload.addEventListener("load", function () {
        progress.removeAttribute("value"); // indeterminate while the server reads the file
        text.textContent = "Reading the file…";
      });
      xhr.addEventListener("load", function () {
        const r = xhr.response;
        if (xhr.status >= 200 && xhr.status < 300 && r && r.url) {
          text.textContent = "Opening…";
          window.location.assign(r.url);
          return;
        }
        showError((r && r.error) || "Upload failed (HTTP " + xhr.status + ").", r && r.findings);
      });
      xhr.addEventListener("error", function () {
        showError("Upload failed: the connection to the server was lost.");
      });
      const data = new FormData();
      for (const f of files) data.append("file", f, f.name);
      xhr.send(data);
    }

    input.addEventListener("change", function () {
      upload(input.files);
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      upload(input.files);
    });

    // The whole page takes drops, so a file dropped beside the zone is not opened by the
    // browser instead.
    let depth = 0;
    document.addEventListener("dragenter", function (e) {
      if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
      depth++;
      zone.classList.add("dragover");
    });
    document.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (depth === 0) zone.classList.remove("dragover");
    });
    document.addEventListener("dragover", function (e) {
      e.preventDefault();
    });
    document.addEventListener("drop", function (e) {
      e.preventDefault();
      depth = 0;
      zone.classList.remove("dragover");
      const files = e.dataTransfer && e.dataTransfer.files;
      upload(files);
    });
  }

  function copyText(s) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(s);
    return new Promise(function (resolve, reject) {
      const ta = el("textarea");
      ta.value = s;
      ta.setAttribute("readonly", "");
      ta.className = "offscreen";
      document.body.appendChild(ta);
      ta.select();
      const ok = document.execCommand("copy");
      ta.remove();
      ok ? resolve() : reject(new Error("copy failed"));
    });
  }

  document.addEventListener("click", function (e) {
    const copyText_ = e.target.closest("[data-copy-text]");
    if (copyText_) {
      const text = copyText_.dataset.copyText;
      const label = copyText_.textContent;
      copyText(text).then(
        function () { copyText_.textContent = "Copied"; },
        function () { window.prompt("Copy this:", text); }
      );
      setTimeout(function () { copyText_.textContent = label; }, 1500);
      return;
    }
    const copy = e.target.closest("[data-copy]");
    if (copy) {
      const url = new URL(copy.dataset.copy, window.location.href).href;
      const label = copy.textContent;
      copyText(url).then(
        function () {
          copy.textContent = "Copied";
          copy.classList.add("copied");
        },
        function () {
          window.prompt("Copy this link:", url);
        }
      );
      setTimeout(function () {
        copy.textContent = label;
        copy.classList.remove("copied");
      }, 1500);
      return;
    }
    const action = e.target.closest("[data-action]");
    if (action && action.dataset.action === "reload") {
      // Reload this very page (its view and place), not the link's plain URL.
      e.preventDefault();
      window.location.reload();
      return;
    }
    if (action) {
      const tree = action.closest(".module-tree");
      const open = action.dataset.action === "expand-all";
      if (tree) tree.querySelectorAll("details").forEach(function (d) { d.open = open; });
    }
  });

  // fragmentError says in place that a fragment failed: in a tree row, or in a page block
  // (statistics, the all-statistics job), which keeps its heading.
  function fragmentError(e, message) {
    const target = e.detail && e.detail.target;
    if (!target) return;
    if (target.tagName === "SECTION") {
      const p = el("p", "fragment-error", message);
      const bar = target.querySelector(".section-bar, h2");
      target.replaceChildren();
      if (bar) target.appendChild(bar);
      target.appendChild(p);
      target.removeAttribute("hx-trigger"); // stop polling a block that fails
      return;
    }
    const li = el("li", "row fragment-error", message);
    if (target.tagName === "LI") target.replaceWith(li);
    else target.replaceChildren(li);
  }
  function isBlock(e) {
    return e.detail && e.detail.target && e.detail.target.tagName === "SECTION";
  }
  document.addEventListener("htmx:responseError", function (e) {
    const status = e.detail.xhr.status;
    fragmentError(e, isBlock(e)
      ? "Could not load this part (HTTP " + status + "). Reload the page to try again."
      : "Could not load this part (HTTP " + status + "). Open the row's link instead.");
  });
  document.addEventListener("htmx:sendError", function (e) {
    fragmentError(e, isBlock(e)
      ? "Could not reach the server. Reload the page to try again."
      : "Could not reach the server. Open the row's link instead.");
  });

  const form = document.getElementById("upload");
  if (form) setupUpload(form);

  // Keyboard: "/" search, arrows move through the tree (right opens a row, left closes
  // it), Enter opens the row's page, "y" copies this page's link, "?" lists the keys.
  const keys = [
    ["/", "search this checkpoint"],
    ["↓ ↑", "move through the tree"],
    ["→ ←", "open or close a row"],
    ["Enter", "open the row's page"],
    ["y", "copy the link to this page"],
    ["?", "show or hide these keys"],
    ["Esc", "leave the search box, close this list"],
  ];
  function keyHelp() {
    let box = document.getElementById("key-help");
    if (box) {
      box.remove();
      return;
    }
    box = el("div", "key-help");
    box.id = "key-help";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "Keyboard shortcuts");
    box.dataset.testid = "key-help";
    box.appendChild(el("h2", "", "Keyboard"));
    const dl = document.createElement("dl");
    keys.forEach(function (k) {
      dl.appendChild(el("dt", "", k[0]));
      dl.appendChild(el("dd", "", k[1]));
    });
    box.appendChild(dl);
    document.body.appendChild(box);
  }
  function visibleRowKeys() {
    return Array.from(document.querySelectorAll('[data-testid="row-key"], [data-testid="module-leaf"] a, summary.mline'))
      .filter(function (a) { return a.offsetParent !== null; });
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
    const box = document.querySelector('[data-testid="search-input"]');
    if (typing) {
      if (e.key === "Escape") t.blur();
      return;
    }
    switch (e.key) {
      case "/":
        if (!box) return;
        e.preventDefault();
        box.focus();
        box.select();
        return;
      case "?":
        e.preventDefault();
        keyHelp();
        return;
      case "Escape":
        const help = document.getElementById("key-help");
        if (help) help.remove();
        return;
      case "y": {
        const link = document.querySelector('[data-testid="copy-link"]');
        if (link) link.click();
        return;
      }
      case "ArrowDown":
      case "ArrowUp": {
        const rows = visibleRowKeys();
        if (rows.length === 0) return;
        e.preventDefault();
        let i = rows.indexOf(document.activeElement);
        i = e.key === "ArrowDown" ? Math.min(rows.length - 1, i + 1) : Math.max(0, i < 0 ? 0 : i - 1);
        rows[i].focus();
        rows[i].scrollIntoView({ block: "nearest" });
        return;
      }
      case "ArrowRight":
      case "ArrowLeft": {
        const a = document.activeElement;
        const details = a && a.closest && a.closest("details");
        if (!details) return;
        e.preventDefault();
        const own = a.closest("summary") && a.closest("summary").parentElement === details;
        if (e.key === "ArrowRight" && own) details.open = true;
        else if (e.key === "ArrowLeft") {
          if (own && details.open) details.open = false;
          else {
            const up = details.parentElement && details.parentElement.closest("details");
            const target = own ? up : details;
            if (target) {
              target.open = false;
              const k = target.querySelector("summary a");
              if (k) k.focus();
            }
          }
        }
        return;
      }
    }
  });
})();
