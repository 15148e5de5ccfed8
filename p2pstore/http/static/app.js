// The status page: polls the JSON API once a second and redraws; uploads by drag-and-drop.
"use strict";

const POLL_MS = 1000;
const HISTORY = 60; // samples in the throughput chart
const samples = []; // {t, rx, tx} bytes/s
let last = null; // previous counters, for rates

const $ = (id) => document.getElementById(id);

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
}

function renderStatus(s) {
  $("node-id").textContent = s.node_id;
  $("addresses").textContent = `udp ${s.udp.join(":")} · tcp ${s.tcp.join(":")}`;
  $("dht-contacts").textContent = `${s.dht.contacts} contact${s.dht.contacts === 1 ? "" : "s"}`;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  $("dht-buckets").textContent = `${plural(s.dht.buckets, "bucket")} · ${plural(s.dht.lookups, "look-up")}`;
  $("peers-connected").textContent = s.peers;
  $("stored").textContent = fmtBytes(s.stored_bytes);
  $("files-count").textContent = `${s.files} file${s.files === 1 ? "" : "s"}` +
    (s.quota_bytes ? ` · quota ${fmtBytes(s.quota_bytes)}` : "");
  const now = performance.now() / 1000;
  const c = s.counters;
  const cur = {
    t: now,
    rx: c.chunk_bytes_fetched + c.http_bytes_received,
    tx: c.chunk_bytes_served + c.http_bytes_sent,
    msgs: s.dht.datagrams_sent + s.dht.datagrams_received,
    drops: s.dht.dropped,
  };
  if (last) {
    const dt = Math.max(cur.t - last.t, 1e-3);
    samples.push({ rx: (cur.rx - last.rx) / dt, tx: (cur.tx - last.tx) / dt });
    while (samples.length > HISTORY) samples.shift();
    $("dht-rate").textContent = ((cur.msgs - last.msgs) / dt).toFixed(1);
    $("dht-drops").textContent = `${((cur.drops - last.drops) / dt).toFixed(1)} dropped / s`;
    const latest = samples[samples.length - 1];
    $("rate-now").textContent = ` · now ${fmtBytes(latest.rx)}/s in, ${fmtBytes(latest.tx)}/s out`;
  }
  last = cur;
  renderTransfers(s.transfers);
  drawChart();
}

function renderTransfers(transfers) {
  const box = $("transfers");
  box.replaceChildren();
  if (!transfers.length) { box.append(el("p", { class: "empty" }, "No transfer running.")); return; }
  for (const t of transfers) {
    const frac = t.bytes_total ? Math.min(1, t.bytes_done / t.bytes_total) : 0;
    const fill = el("div", { class: "fill" });
    fill.style.width = (frac * 100).toFixed(1) + "%";
    const peers = Object.entries(t.peer_rates || {})
      .map(([p, r]) => `${p} ${fmtBytes(r)}/s`).join(", ");
    box.append(el("div", { class: "transfer", "data-file-id": t.file_id || "", "data-fraction": frac.toFixed(4) },
      el("div", {}, el("b", {}, t.kind), " ", t.name, " — ",
        el("span", { class: "done" }, fmtBytes(t.bytes_done)), " of ", fmtBytes(t.bytes_total),
        ` (${(frac * 100).toFixed(1)} %)`),
      el("div", { class: "bar" }, fill),
      el("div", { class: "small" }, t.peers ? `${t.peers} peer(s): ${peers}` : "")));
  }
}

function renderFiles(files) {
  const body = $("files").querySelector("tbody");
  body.replaceChildren();
  for (const f of files) {
    const link = el("a", { href: `/files/${f.file_id}`, class: "file-link" }, f.name);
    body.append(el("tr", { "data-file-id": f.file_id },
      el("td", {}, link), el("td", {}, fmtBytes(f.size)),
      el("td", {}, f.pinned ? (f.pin_kind || "yes") : "no"),
      el("td", {}, `${f.chunks_present} / ${f.chunks_total}`),
      el("td", {}, el("code", {}, f.file_id.slice(0, 16) + "…"))));
  }
  if (!files.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "empty" }, "No files yet.")));
}

function renderPeers(p) {
  const body = $("peers").querySelector("tbody");
  body.replaceChildren();
  for (const c of p.peers) {
    body.append(el("tr", {}, el("td", {}, el("code", {}, c.node_id.slice(0, 16) + "…")),
      el("td", {}, `${c.host}:${c.port}`)));
  }
  if (!p.peers.length) body.append(el("tr", {}, el("td", { colspan: "2", class: "empty" }, "No contacts yet.")));
  const rates = $("peer-rates").querySelector("tbody");
  rates.replaceChildren();
  const entries = Object.entries(p.transfer_peers || {}).sort((a, b) => b[1] - a[1]);
  for (const [addr, rate] of entries) {
    rates.append(el("tr", {}, el("td", {}, addr), el("td", {}, `${fmtBytes(rate)}/s`)));
  }
  if (!entries.length) rates.append(el("tr", {}, el("td", { colspan: "2", class: "empty" }, "Not receiving from anyone.")));
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...samples.map((s) => Math.max(s.rx, s.tx)));
  ctx.fillStyle = "#6b7385";
  ctx.font = "11px sans-serif";
  ctx.fillText(fmtBytes(max) + "/s", 6, 12);
  for (const [key, color] of [["rx", "#2f6fde"], ["tx", "#e0803a"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => {
      const x = w - 2 - ((samples.length - 1 - i) / (HISTORY - 1)) * (w - 4); // newest at right
      const y = h - 4 - (s[key] / max) * (h - 20);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

async function poll() {
  try {
    const [status, files, peers] = await Promise.all(
      [getJSON("/api/status"), getJSON("/api/files"), getJSON("/api/peers")]);
    renderStatus(status);
    renderFiles(files.files);
    renderPeers(peers);
    showError("");
  } catch (err) {
    showError("cannot reach the node: " + err.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function upload(file) {
  const result = $("upload-result");
  const disperse = $("disperse").checked ? "1" : "0";
  result.textContent = `storing ${file.name}…`;
  try {
    const r = await fetch(`/files?name=${encodeURIComponent(file.name)}&disperse=${disperse}`,
      { method: "POST", body: file });
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
    result.replaceChildren("stored ", el("a", { href: body.url, id: "uploaded-link" }, file.name),
      " as ", el("code", { id: "uploaded-id" }, body.file_id));
    if (body.not_dispersed) result.append(` (kept on this node only: ${body.not_dispersed})`);
  } catch (err) {
    result.textContent = `upload failed: ${err.message}`;
  }
}

function setupUpload() {
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    for (const f of e.dataTransfer.files) upload(f);
  });
  $("file-input").addEventListener("change", (e) => {
    for (const f of e.target.files) upload(f);
    e.target.value = "";
  });
}

setupUpload();
poll();
