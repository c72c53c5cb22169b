// Uploads, on the upload page and on the list (/blobs): each file is sent as a raw request body (not
// multipart) with a real progress bar and a Cancel button. Cancelling aborts the request: the server sees the
// connection end before Content-Length and throws the partial file away at once (row, data key and stored
// object). Once the last byte has been sent the server is sealing the file, so Cancel goes away.
// Without JavaScript the upload form posts multipart and the server encrypts it as it arrives.
(() => {
  "use strict";
  const PARALLEL = 2;

  // The one unit system of every page (tenants/units.py): "1 byte", "1023 bytes", "1.0 KiB", "2.4 MiB".
  function formatBytes(n) {
    if (n < 1024) return n === 1 ? "1 byte" : `${n} bytes`;
    const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    n /= 1024;
    while (Number(n.toFixed(1)) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(1)} ${units[i]}`;
  }

  // One queue of uploads shown in `section` (its <ul>, its live status line, and an optional
  // [data-upload-done] element shown once every upload has ended).
  function makeUploader(section, url, csrf) {
    const list = section.querySelector("ul");
    const status = section.querySelector("[data-upload-status]");
    const done = section.querySelector("[data-upload-done]");
    const queue = [];
    let running = 0;
    let stored = 0;

    function addRow(file) {
      const li = document.createElement("li");
      li.className = "blobs-progress-item";
      const label = document.createElement("span");
      label.className = "blobs-progress-name";
      label.textContent = file.name;
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute("aria-label", `Upload of ${file.name}`);
      const note = document.createElement("span");
      note.className = "blobs-progress-note";
      note.textContent = `waiting · ${formatBytes(file.size)}`;
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "button small";
      cancel.append("Cancel");
      const hidden = document.createElement("span");
      hidden.className = "visually-hidden";
      hidden.textContent = ` the upload of ${file.name}`;
      cancel.append(hidden);
      li.append(label, bar, note, cancel);
      list.append(li);
      section.hidden = false;
      if (done) done.hidden = true;
      return { li, bar, note, cancel, file, xhr: null, ended: false };
    }

    // Where Cancel was: an empty cell, so every row keeps the same columns.
    function dropCancel(row) {
      if (!row.cancel.isConnected) return;
      const slot = document.createElement("span");
      slot.className = "blobs-progress-action";
      row.cancel.replaceWith(slot);
    }

    function settle(row, state, content) {
      row.ended = true;
      dropCancel(row);
      row.li.classList.add(state);
      row.note.textContent = "";
      row.note.append(content);
      if (done && !running && !queue.length && stored) done.hidden = false;
    }

    function finish(row, ok, content) {
      running -= 1;
      settle(row, ok ? "is-done" : "is-failed", content);
      pump();
    }

    function cancel(row) {
      if (row.ended) return;
      const waiting = queue.indexOf(row);
      if (waiting >= 0) {
        queue.splice(waiting, 1);
        settle(row, "is-cancelled", document.createTextNode("Cancelled before it started; nothing was sent."));
      } else if (row.xhr) {
        row.xhr.abort(); // the "abort" listener below tells what happened
      }
      status.textContent = `${row.file.name}: upload cancelled.`;
    }

    function sealing(row) {
      // Every byte is on its way: the server is encrypting the last chunk and committing. Too late to cancel.
      if (row.ended || !row.cancel.isConnected) return;
      dropCancel(row);
      row.bar.value = 100;
      row.note.textContent = "finishing: sealing the last chunk…";
    }

    function send(row) {
      const { file } = row;
      const params = new URLSearchParams({ name: file.name });
      if (file.type) params.set("type", file.type);
      const xhr = new XMLHttpRequest();
      row.xhr = xhr;
      xhr.open("POST", `${url}?${params}`);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable || row.ended) return;
        const pct = event.total ? Math.round((event.loaded / event.total) * 100) : 100;
        row.bar.value = pct;
        row.note.textContent = `${pct}% · ${formatBytes(event.loaded)} of ${formatBytes(event.total)}`;
        if (event.loaded >= event.total) sealing(row);
      });
      xhr.upload.addEventListener("load", () => sealing(row));
      xhr.addEventListener("load", () => {
        const body = xhr.response || {};
        if (xhr.status === 201) {
          stored += 1;
          row.bar.value = 100;
          const link = document.createElement("a");
          link.href = body.url;
          link.textContent = `Uploaded ${body.name}`;
          status.textContent = `Uploaded ${body.name}.`;
          finish(row, true, link);
        } else {
          const message = (body.error && body.error.message) || `Upload failed (HTTP ${xhr.status}).`;
          status.textContent = `${file.name}: ${message}`;
          row.bar.value = 0;
          finish(row, false, document.createTextNode(message));
        }
      });
      xhr.addEventListener("abort", () => {
        row.bar.value = 0;
        finish(row, false, document.createTextNode("Cancelled; nothing was stored."));
        row.li.classList.replace("is-failed", "is-cancelled");
      });
      xhr.addEventListener("error", () => {
        status.textContent = `${file.name}: the connection failed.`;
        finish(row, false, document.createTextNode("The connection failed; nothing was stored."));
      });
      row.note.textContent = "starting…";
      xhr.send(file);
    }

    function pump() {
      while (running < PARALLEL && queue.length) {
        running += 1;
        send(queue.shift());
      }
    }

    return function enqueue(files) {
      for (const file of files) {
        const row = addRow(file);
        row.cancel.addEventListener("click", () => cancel(row));
        queue.push(row);
      }
      pump();
    };
  }

  // The upload page: the form, and its drop zone.
  const form = document.querySelector("form[data-blob-upload]");
  if (form) {
    const input = form.querySelector('input[type="file"]');
    const dropzone = form.querySelector("[data-dropzone]");
    const csrf = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
    const enqueue = makeUploader(document.querySelector("[data-upload-list]"), form.action, csrf);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!input.files.length) { input.reportValidity(); return; }
      enqueue(Array.from(input.files));
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      dropzone.addEventListener(type, (event) => { event.preventDefault(); dropzone.classList.add("is-over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      dropzone.addEventListener(type, () => dropzone.classList.remove("is-over"));
    }
    dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) enqueue(Array.from(event.dataTransfer.files));
    });
  }

  // The list page: files dropped anywhere on it are uploaded, with an overlay while they are dragged over it.
  const overlay = document.querySelector("[data-drop-overlay]");
  const section = document.querySelector("section[data-upload-list][data-upload-url]");
  if (overlay && section && !form) {
    const csrf = section.querySelector('input[name="csrfmiddlewaretoken"]').value;
    const enqueue = makeUploader(section, section.dataset.uploadUrl, csrf);
    const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    let depth = 0;
    const hide = () => { depth = 0; overlay.hidden = true; };
    window.addEventListener("dragenter", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth += 1;
      overlay.hidden = false;
    });
    window.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      overlay.hidden = false;
    });
    window.addEventListener("dragleave", (event) => {
      if (!carriesFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (!depth) overlay.hidden = true;
    });
    window.addEventListener("dragend", hide);
    window.addEventListener("drop", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      hide();
      if (event.dataTransfer.files.length) {
        enqueue(Array.from(event.dataTransfer.files));
        section.scrollIntoView({ block: "nearest" });
      }
    });
  }

  // The list page: tick files (or all of this page) and download them as one archive.
  const selection = document.querySelector("form[data-selection]");
  if (selection) {
    const all = selection.querySelector("[data-select-all]");
    const submit = selection.querySelector("[data-selection-submit]");
    const count = selection.querySelector("[data-selection-count]");
    const hint = count.textContent;
    const boxes = () => Array.from(selection.querySelectorAll('input[name="ids"]'));
    const update = () => {
      const n = boxes().filter((box) => box.checked).length;
      const total = boxes().length;
      all.checked = total > 0 && n === total;
      all.indeterminate = n > 0 && n < total;
      submit.disabled = n === 0;
      count.textContent = n ? `${n} file${n === 1 ? "" : "s"} selected.` : hint;
    };
    all.hidden = false;
    all.disabled = boxes().length === 0;
    all.addEventListener("change", () => {
      for (const box of boxes()) box.checked = all.checked;
      update();
    });
    selection.addEventListener("change", (event) => { if (event.target.name === "ids") update(); });
    update();
  }
})();

// API tokens page: copy the new secret.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (field && navigator.clipboard) navigator.clipboard.writeText(field.value).then(() => { button.textContent = "Copied"; });
});
