// The circuit page's graph. Cytoscape draws the circuit from the page's own JSON (#circuit-data) and dagre lays it
// out left to right: its columns are forward order (the embeddings, each block's node layers, the two candidate
// logits), pinned through dagre's ranker option so that a layer always has one column, and dagre orders each column to
// cross few of the circuit's weights. The residual stream and the logit reads are drawn but left out of the layout:
// they span many columns, and dagre would stack a column of placeholders for each. Weights are green (positive) or
// red (negative), as wide as |weight| is strong; the residual stream is faint dashes. Hovering a node shows what its
// unit does (#node-brief): its statistics from the page, and its first top contexts fetched from the unit's own JSON
// twin (once per unit), so that the page of a circuit of thousands of nodes carries none; clicking it opens the
// unit's page. The graph is window.circuitGraph, for the console and the browser tests. It is built once the page's
// deferred scripts have all run: tokens are shown by atlas.js's window.atlascope.visibleToken, which runs after this.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  const source = document.getElementById("circuit-data");
  const container = document.getElementById("circuit-graph");
  const briefBox = document.getElementById("node-brief");
  if (!source || !container || typeof cytoscape === "undefined") return;

  const data = JSON.parse(source.textContent);
  const visible = window.atlascope.visibleToken;
  const nodeId = (layer, index) => layer + ":" + index;
  const logitId = (token) => "logit:" + token;
  const strongest = (links) => links.reduce((most, link) => Math.max(most, Math.abs(link.weight)), 0) || 1;
  const BRIEF_CONTEXTS = 3, BEFORE = 8, AFTER = 3;  // top contexts in a brief; tokens kept around the marked one
  let briefs = 0;  // briefs shown or hidden so far: contexts arriving for an earlier one are dropped
  const SHORT_KINDS = {
    "attn.act_in": "attn read", "attn.q": "q", "attn.k": "k", "attn.v": "v", "attn.out": "attn write",
    "mlp.act_in": "mlp read", "mlp.post_act": "neuron", "mlp.out": "mlp write",
  };
  const KIND_CLASSES = {
    "resid_pre": "embedding", "attn.act_in": "read", "mlp.act_in": "read", "attn.q": "qk", "attn.k": "qk",
    "attn.v": "v", "attn.out": "write", "mlp.out": "write", "mlp.post_act": "neuron",
  };

  const columnOf = new Map();
  const elements = [];
  for (const node of data.nodes) {
    const id = nodeId(node.layer, node.index);
    columnOf.set(id, node.column);
    elements.push({ group: "nodes", classes: "unit " + (KIND_CLASSES[node.kind] || ""),
                    data: { id: id, label: String(node.index), layer: node.layer, kind: node.kind, index: node.index,
                            tau: node.tau, url: node.url, twin: node.json_url, brief: node.brief,
                            column: node.column } });
  }
  for (const candidate of data.candidates) {
    columnOf.set(logitId(candidate.token), candidate.column);
    const logit = { id: logitId(candidate.token), label: visible(candidate.token), column: candidate.column };
    elements.push({ group: "nodes", classes: "logit", data: logit });
  }
  const sign = (weight) => (weight < 0 ? " negative" : " positive");
  const heaviest = strongest(data.edges);
  data.edges.forEach((edge, i) => elements.push({
    group: "edges", classes: "weight" + sign(edge.weight),
    data: { id: "w" + i, source: nodeId(edge.src_layer, edge.src_index), target: nodeId(edge.dst_layer, edge.dst_index),
            weight: edge.weight, strength: Math.abs(edge.weight) / heaviest } }));
  data.residual.forEach((link, i) => elements.push({
    group: "edges", classes: "residual",
    data: { id: "r" + i, source: nodeId(link.src_layer, link.index), target: nodeId(link.dst_layer, link.index) } }));
  const loudest = strongest(data.logits);
  data.logits.forEach((read, i) => elements.push({
    group: "edges", classes: "readout" + sign(read.weight),
    data: { id: "l" + i, source: nodeId(read.layer, read.index), target: logitId(read.token), weight: read.weight,
            strength: Math.abs(read.weight) / loudest } }));

  // Dagre ranks are every other integer (it halves the rank separation to leave room for edge labels); columns with
  // no node are skipped, and dagre's own root node (it adds one to every graph) goes before the first.
  const ranks = new Map([...new Set(columnOf.values())].sort((a, b) => a - b).map((column, i) => [column, 2 * i]));
  const ranker = (graph) => graph.nodes().forEach((id) => {
    graph.node(id).rank = columnOf.has(id) ? ranks.get(columnOf.get(id)) : -2;
  });

  const cy = cytoscape({
    container: container,
    elements: elements,
    minZoom: 0.1,
    maxZoom: 4,
    style: [
      { selector: "node", style: { "width": 22, "height": 22, "label": "data(label)", "font-size": 9, "color": "#fff",
                                   "text-valign": "center", "text-halign": "center", "background-color": "#6b7385" } },
      { selector: "node.embedding", style: { "background-color": "#9aa1ae" } },
      { selector: "node.read", style: { "background-color": "#5b7fd6" } },
      { selector: "node.qk", style: { "background-color": "#8e5bd6" } },
      { selector: "node.v", style: { "background-color": "#c24fb0" } },
      { selector: "node.neuron", style: { "background-color": "#ea8014" } },
      { selector: "node.write", style: { "background-color": "#1f9a8a" } },
      { selector: "node.logit", style: { "shape": "round-rectangle", "width": 30, "font-size": 12,
                                         "background-color": "#1d2330" } },
      { selector: "node.header", style: { "background-opacity": 0, "color": "#6b7385", "font-size": 9, "width": 1,
                                          "height": 1, "text-wrap": "wrap", "text-valign": "top", "events": "no" } },
      { selector: "node.focus", style: { "border-width": 3, "border-color": "#1d2330" } },
      { selector: "edge", style: { "curve-style": "bezier", "opacity": 0.8 } },
      { selector: "edge.weight, edge.readout", style: { "width": "mapData(strength, 0, 1, 0.6, 7)" } },
      { selector: "edge.positive", style: { "line-color": "#1f7a4d" } },
      { selector: "edge.negative", style: { "line-color": "#b3372f" } },
      { selector: "edge.residual", style: { "width": 1, "line-color": "#b9bfcc", "line-style": "dashed",
                                            "opacity": 0.6 } },
      { selector: ".faded", style: { "opacity": 0.12 } },
    ],
  });
  cy.elements().not("edge.residual, edge.readout")
    .layout({ name: "dagre", rankDir: "LR", ranker: ranker, nodeSep: 8, edgeSep: 4, rankSep: 44, fit: false }).run();
  addColumnHeaders();
  fitHeight();
  window.circuitGraph = cy;

  // The canvas as tall as the graph needs at the width it has (within bounds), so a small circuit is not a thin
  // strip in a tall box and a big one gets room.
  function fitHeight() {
    const box = cy.elements().boundingBox();
    const wanted = container.clientWidth * box.h / Math.max(box.w, 1) + 48;
    container.style.height = Math.round(Math.min(720, Math.max(280, wanted))) + "px";
    cy.resize();
    cy.fit(undefined, 24);
  }

  // A title above each column: its block and layer kind (the embeddings and logits by what they are).
  function addColumnHeaders() {
    const columns = new Map();
    cy.nodes().forEach((node) => {
      const key = node.data("column");
      if (!columns.has(key)) columns.set(key, node);
    });
    const top = cy.nodes().reduce((least, node) => Math.min(least, node.position("y")), Infinity) - 24;
    columns.forEach((node, column) => {
      const layer = node.data("layer") || "";
      const title = node.hasClass("logit") ? "logits" : node.hasClass("embedding") ? "embedding"
        : "block " + layer.split(".")[0] + "\n" + (SHORT_KINDS[node.data("kind")] || node.data("kind"));
      cy.add({ group: "nodes", classes: "header", data: { id: "column:" + column, label: title },
               position: { x: node.position("x"), y: top }, grabbable: false, selectable: false });
    });
  }

  cy.on("mouseover", "node.unit", (event) => {
    const node = event.target;
    container.style.cursor = "pointer";
    cy.elements().not(node.closedNeighborhood()).addClass("faded");
    node.addClass("focus");
    showBrief(node);
  });
  // Leaving a node, or the canvas in one quick move (which cytoscape does not report as leaving the node)
  function clearFocus() {
    container.style.cursor = "";
    cy.elements().removeClass("faded focus");
    briefBox.hidden = true;
    briefs += 1;
  }
  cy.on("mouseout", "node.unit", clearFocus);
  container.addEventListener("mouseleave", clearFocus);
  cy.on("tap", "node.unit", (event) => window.location.assign(event.target.data("url")));

  function element(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function number(value, digits) {
    return value === null || value === undefined ? "–" : Number(value.toPrecision(digits || 3)).toString();
  }

  // A unit's first top contexts, from its twin (`contexts.top`), fetched once; null if it could not be read.
  const contextsOf = new Map();
  function topContexts(url) {
    if (!contextsOf.has(url)) {
      contextsOf.set(url, fetch(url, { headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : null))
        .then((unit) => (unit ? ((unit.contexts && unit.contexts.top) || []).slice(0, BRIEF_CONTEXTS) : null))
        .catch(() => null)
        .then((found) => { if (found === null) contextsOf.delete(url); return found; }));
    }
    return contextsOf.get(url);
  }

  // A context cut to a few tokens around its marked one, the marked one highlighted.
  function shortContext(context) {
    const start = Math.max(0, context.position - BEFORE);
    const item = element("li");
    const code = element("code");
    context.tokens.slice(start, context.position + AFTER + 1).forEach((token, i) => code.append(
      i === context.position - start ? element("mark", "", visible(token)) : document.createTextNode(visible(token))));
    item.append(code, element("span", "muted", "  " + number(context.activation)));
    return item;
  }

  // The unit's layer and index, tau, density and max, top tokens and a few short contexts around its peaks.
  function showBrief(node) {
    const brief = node.data("brief");
    const shown = ++briefs;
    briefBox.replaceChildren();
    const head = element("div", "brief-head", node.data("layer") + ":" + node.data("index"));
    const tau = node.data("tau");
    if (tau !== null && tau !== undefined) head.append(element("span", "muted", " · tau " + number(tau)));
    briefBox.append(head);
    if (!brief) {
      briefBox.append(element("div", "muted", "not measured yet"));
    } else {
      const density = brief.density === null ? "–" : (100 * brief.density).toFixed(2) + "%";
      briefBox.append(element("div", "brief-stats", "density " + density + " · max " + number(brief.max)));
      if (brief.top_tokens.length) {
        const peaks = brief.top_tokens.slice(0, 6).map(visible).join("  ");
        briefBox.append(element("div", "brief-tokens", "peaks on " + peaks));
      }
      const contexts = element("ol", "brief-contexts");
      const waiting = element("div", "muted brief-loading", "contexts…");
      briefBox.append(contexts, waiting);
      topContexts(node.data("twin")).then((found) => {
        if (briefs !== shown) return;
        waiting.remove();
        if (found === null) contexts.replaceWith(element("div", "muted", "contexts could not be read"));
        else found.forEach((context) => contexts.append(shortContext(context)));
      });
    }
    briefBox.append(element("div", "muted", "click to open its page"));
    const at = node.renderedPosition();
    briefBox.hidden = false;
    const left = Math.min(at.x + 16, container.clientWidth - briefBox.offsetWidth - 4);
    briefBox.style.left = Math.max(4, left) + "px";
    briefBox.style.top = (at.y + 16) + "px";
  }
});
