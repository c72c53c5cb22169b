// Upload page: each file is sent as a raw request body (not multipart) with a real progress bar.
// Without JavaScript the same form posts multipart and the server encrypts it as it arrives.
(() => {
  "use strict";
  const form = document.querySelector("form[data-blob-upload]");
  if (!form) return;
  const input = form.querySelector('input[type="file"]');
  const dropzone = form.querySelector("[data-dropzone]");
  const section = document.querySelector("[data-upload-list]");
  const list = section.querySelector("ul");
  const status = section.querySelector("[data-upload-status]");
  const csrf = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
  const queue = [];
  let running = 0;
  const PARALLEL = 2;

  function formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
  }

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
    li.append(label, bar, note);
    list.append(li);
    section.hidden = false;
    return { li, bar, note };
  }

  function finish(row, ok, html) {
    row.li.classList.add(ok ? "is-done" : "is-failed");
    row.note.textContent = "";
    row.note.append(html);
    running -= 1;
    pump();
  }

  function send(file, row) {
    const params = new URLSearchParams({ name: file.name });
    if (file.type) params.set("type", file.type);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${form.action}?${params}`);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const pct = event.total ? Math.round((event.loaded / event.total) * 100) : 100;
      row.bar.value = pct;
      row.note.textContent = `${pct}% · ${formatBytes(event.loaded)} of ${formatBytes(event.total)}`;
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response || {};
      if (xhr.status === 201) {
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
    xhr.addEventListener("error", () => {
      status.textContent = `${file.name}: the connection failed.`;
      finish(row, false, document.createTextNode("The connection failed; nothing was stored."));
    });
    row.note.textContent = "starting…";
    xhr.send(file);
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      const [file, row] = queue.shift();
      running += 1;
      send(file, row);
    }
  }

  function enqueue(files) {
    for (const file of files) queue.push([file, addRow(file)]);
    pump();
  }

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
})();

// API tokens page: copy the new secret.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (field && navigator.clipboard) navigator.clipboard.writeText(field.value).then(() => { button.textContent = "Copied"; });
});
