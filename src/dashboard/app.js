// orc's dashboard: draws the view the manager streams (/api/stream). Every text from
// the cluster is set as text (textContent), never as HTML.
"use strict";
(function () {
  // What a test or a benchmark reads: when each view was drawn, and from what.
  const probe = { loadId: Math.random().toString(36).slice(2), renders: [], firstRender: null, views: 0 };
  window.orc = probe;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function card(t, node, nodeId) {
    const c = el("div", "card state-" + t.state);
    if (t.lost) c.classList.add("lost");
    if (t.desired !== "running" && t.state === "running") c.classList.add("stopping");
    c.dataset.task = t.id;
    c.dataset.service = t.service;
    c.dataset.state = t.state;
    c.dataset.node = node;
    c.dataset.nodeId = nodeId;
    c.dataset.lost = t.lost ? "true" : "false";
    c.title = t.message || t.state;
    c.appendChild(el("div", "title", t.slot ? t.service + "." + t.slot : t.service));
    let sub = t.state;
    if (t.desired !== "running") sub += " → " + t.desired;
    if (t.lost) sub += " (node down)";
    c.appendChild(el("div", "sub", sub));
    c.appendChild(el("div", "sub", t.image));
    return c;
  }

  function column(n) {
    const col = el("div", "node");
    col.dataset.node = n.hostname;
    col.dataset.nodeId = n.id;
    col.dataset.status = n.status;
    if (n.status !== "ready") col.classList.add("down");
    if (n.availability !== "active") col.classList.add(n.availability);
    const head = el("div", "head");
    head.appendChild(el("div", "name", (n.leader ? "★ " : "") + n.hostname));
    head.appendChild(el("div", "meta", n.role + " · " + n.status + " · " + n.availability));
    head.appendChild(el("div", "meta", n.address));
    col.appendChild(head);
    const cards = el("div", "cards");
    for (const t of n.tasks) cards.appendChild(card(t, n.hostname, n.id));
    if (n.more > 0) cards.appendChild(el("div", "more", "+" + n.more + " more"));
    col.appendChild(cards);
    return col;
  }

  function bar(done, wanted) {
    const b = el("span", "bar" + (done < wanted ? " partial" : ""));
    const i = el("i");
    i.style.width = (wanted > 0 ? Math.min(100, (100 * done) / wanted) : 100) + "%";
    b.appendChild(i);
    return b;
  }

  function row(s) {
    const tr = el("tr");
    tr.dataset.service = s.name;
    tr.appendChild(el("td", null, s.name));
    tr.appendChild(el("td", null, s.mode));
    const rep = el("td");
    rep.dataset.replicas = s.running + "/" + s.desired;
    rep.appendChild(bar(s.running, s.desired));
    rep.appendChild(document.createTextNode(s.running + "/" + s.desired));
    tr.appendChild(rep);
    tr.appendChild(el("td", null, s.image));
    tr.appendChild(el("td", null, s.stack));
    const up = el("td");
    if (s.update) {
      up.dataset.update = s.update.state;
      up.appendChild(bar(s.update.done, s.update.wanted));
      up.appendChild(document.createTextNode(s.update.state + " " + s.update.done + "/" + s.update.wanted));
      up.title = s.update.message;
    }
    tr.appendChild(up);
    return tr;
  }

  function event(e) {
    const li = el("li");
    const t = el("time", null, e.time.replace("T", " ").slice(0, 19));
    t.dateTime = e.time;
    li.appendChild(t);
    li.appendChild(el("span", "kind", e.type + " " + e.action));
    li.appendChild(el("span", null, e.name || e.id));
    const attrs = Object.entries(e.attributes || {})
      .filter(([k]) => k !== "name")
      .map(([k, v]) => k + "=" + (/^[0-9a-f]{32,}$/.test(v) ? v.slice(0, 12) : v))
      .join(" ");
    if (attrs) li.appendChild(el("span", "more", " " + attrs));
    return li;
  }

  function render(v) {
    const nodes = document.getElementById("nodes");
    const cols = v.nodes.map(column);
    if (v.unassigned.length > 0) {
      cols.push(column({ id: "", hostname: "(no node yet)", role: "pending", status: "ready", availability: "active",
        address: "tasks waiting for a node", leader: false, tasks: v.unassigned, more: 0 }));
    }
    nodes.replaceChildren(...cols);
    if (v.more_nodes > 0) nodes.appendChild(el("div", "more", "+" + v.more_nodes + " more nodes"));
    document.querySelector("#services tbody").replaceChildren(...v.services.map(row));
    const more = document.getElementById("more-services");
    more.hidden = v.more_services === 0;
    more.textContent = "+" + v.more_services + " more services";
    document.getElementById("events").replaceChildren(...v.events.map(event));
    const tasks = v.nodes.reduce((n, c) => n + c.tasks.length, 0);
    const ready = v.nodes.filter((n) => n.status === "ready").length;
    document.getElementById("summary").textContent =
      v.nodes.length + " nodes (" + ready + " ready) · " + v.services.length + " services · " + tasks +
      " tasks · leader " + (v.leader || "none") + " · served by " + v.served_by;
    const running = v.nodes.reduce((n, c) => n + c.tasks.filter((t) => t.state === "running").length, 0);
    const now = Date.now();
    const mark = { at: now, perf: performance.now(), generated_ms: v.generated_ms, last_event_nano: v.last_event_nano,
      tasks: tasks, running: running };
    probe.views += 1;
    if (probe.firstRender === null) probe.firstRender = mark;
    probe.renders.push(mark);
    if (probe.renders.length > 500) probe.renders.shift();
  }

  function live(on) {
    const l = document.getElementById("live");
    l.className = "live " + (on ? "on" : "off");
    l.textContent = on ? "live" : "reconnecting";
  }

  function start() {
    const es = new EventSource("/api/stream");
    es.addEventListener("view", (m) => {
      live(true);
      render(JSON.parse(m.data));
    });
    es.onopen = () => live(true);
    es.onerror = () => live(false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
