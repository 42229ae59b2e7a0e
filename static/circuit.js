// The circuit page's graph and instruments.
//
// Graph. Cytoscape draws the circuit from the page's own JSON (#circuit-data) and dagre lays it out left to right:
// its columns are forward order (the embeddings, each block's node layers, the two candidate logits), pinned through
// dagre's ranker option so that a layer always has one column, and dagre orders each column to cross few of the
// circuit's weights. The residual stream and the logit reads are drawn but left out of the layout: they span many
// columns, and dagre would stack a column of placeholders for each. A circuit shown at a large k (hundreds of nodes
// and more) is laid out in plain columns instead, without dagre, so that a page at the whole model still draws in a
// moment; past a few thousand residual links those are left out and the note says so. Weights are green (positive)
// or red (negative), as wide as |weight| is strong; the residual stream is faint dashes. Hovering a node shows what
// its unit does (#node-brief): its statistics from the page, and its first top contexts fetched from the unit's own
// JSON twin (once per unit), so that the page of a circuit of thousands of nodes carries none; clicking it opens the
// unit's page. The graph is window.circuitGraph, for the console and the browser tests.
//
// The reader's view. Ctrl-, ⌘- or Shift-clicking a node pins it; pinned nodes can be labelled and grouped into named
// supernodes (drawn as a box around them). The view lives in the page's address as circuit-tracer's qParams
// (pinnedIds: comma-separated node ids; supernodes: JSON [[name, id, ...]]; clerps: JSON [[id, label]]), with node ids
// as the graph JSON download writes them, so a link reproduces the view, and the download link, the k links and the
// slider carry it. "Reset view" is the circuit's own page.
//
// Instruments: a slider over the k's the page offers (#k-picker: each is a link as well), and the held-out pairs
// (#activations-data): a heatmap of the nodes' activations (first prompt minus second), whose cells show the pair
// when pointed at, and the attention of the circuit's heads from the last position.
//
// Everything is built once the page's deferred scripts have all run: tokens are shown by atlas.js's
// window.atlascope.visibleToken, which runs after this.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  const visible = window.atlascope.visibleToken;
  const params = new URLSearchParams(window.location.search);
  const STATE_KEYS = ["pinnedIds", "supernodes", "clerps"];

  function element(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function number(value, digits) {
    return value === null || value === undefined ? "–" : Number(value.toPrecision(digits || 3)).toString();
  }

  function parseList(raw) {
    if (!raw) return [];
    try {
      const found = JSON.parse(raw);
      return Array.isArray(found) ? found.filter((item) => Array.isArray(item)) : [];
    } catch (error) {
      return [];
    }
  }

  // The address with the view's state (and any other parameter of `url`) in it.
  function withState(url, state) {
    const target = new URL(url, window.location.href);
    STATE_KEYS.forEach((key) => target.searchParams.delete(key));
    if (state.pinned.length) target.searchParams.set("pinnedIds", state.pinned.join(","));
    if (state.groups.length) target.searchParams.set("supernodes", JSON.stringify(state.groups));
    const labels = Object.entries(state.labels).filter(([, label]) => label);
    if (labels.length) target.searchParams.set("clerps", JSON.stringify(labels));
    return target.pathname + target.search + target.hash;
  }

  const state = {
    pinned: (params.get("pinnedIds") || "").split(",").filter(Boolean),
    groups: parseList(params.get("supernodes")).filter((group) => group.length > 1).map((group) => group.map(String)),
    labels: Object.fromEntries(parseList(params.get("clerps")).filter((pair) => pair.length === 2)),
  };

  setUpKPicker();
  const panel = document.getElementById("view-state");
  if (panel && document.getElementById("circuit-data")) panel.hidden = false;  // before the graph measures its place
  const graph = drawGraph();
  if (graph) setUpView(graph);
  drawPairs();

  // -- k ---------------------------------------------------------------------------------------------------------

  function kLinks() {
    return document.querySelectorAll("#k-choices a, a.k-link");
  }

  function setUpKPicker() {
    const slider = document.getElementById("k-slider");
    const choices = [...document.querySelectorAll("#k-choices a")];
    if (!slider || !choices.length) return;
    const output = document.getElementById("k-value");
    slider.hidden = false;
    const say = () => {
      const chosen = choices[Number(slider.value)];
      const loss = chosen.dataset.loss ? ", loss " + number(Number(chosen.dataset.loss)) : "";
      output.textContent = "k = " + Number(chosen.dataset.k).toLocaleString("en") + loss;
    };
    slider.addEventListener("input", say);
    slider.addEventListener("change", () => window.location.assign(choices[Number(slider.value)].href));
  }

  // -- the graph -----------------------------------------------------------------------------------------------------

  function drawGraph() {
    const source = document.getElementById("circuit-data");
    const container = document.getElementById("circuit-graph");
    const briefBox = document.getElementById("node-brief");
    if (!source || !container || typeof cytoscape === "undefined") return null;

    const data = JSON.parse(source.textContent);
    const nodeId = (layer, index) => layer + ":" + index;
    const logitId = (token) => "logit:" + token;
    const strongest = (links) => links.reduce((most, link) => Math.max(most, Math.abs(link.weight)), 0) || 1;
    const BRIEF_CONTEXTS = 3, BEFORE = 8, AFTER = 3;  // top contexts in a brief; tokens kept around the marked one
    const LARGE = 400;  // unit nodes past which columns are laid out plainly, without dagre
    const MOST_NODES = 1500;  // past this many, a view draws the nodes its drawn weights and logit reads join
    const MOST_RESIDUAL = 3000;  // residual links drawn at most
    let briefs = 0;  // briefs shown or hidden so far: contexts arriving for an earlier one are dropped
    const SHORT_KINDS = {
      "attn.act_in": "attn read", "attn.q": "q", "attn.k": "k", "attn.v": "v", "attn.out": "attn write",
      "mlp.act_in": "mlp read", "mlp.post_act": "neuron", "mlp.out": "mlp write",
    };
    const KIND_CLASSES = {
      "resid_pre": "embedding", "attn.act_in": "read", "mlp.act_in": "read", "attn.q": "qk", "attn.k": "qk",
      "attn.v": "v", "attn.out": "write", "mlp.out": "write", "mlp.post_act": "neuron",
    };

    // A view of thousands of nodes (a large k) draws those that its strongest weights and the logit reads join, and
    // those the reader's view names; the layer counts and the node table list them all.
    let shown = data.nodes;
    if (data.nodes.length > MOST_NODES) {
      const wanted = new Set();
      data.edges.forEach((e) => wanted.add(nodeId(e.src_layer, e.src_index)).add(nodeId(e.dst_layer, e.dst_index)));
      data.logits.forEach((read) => wanted.add(nodeId(read.layer, read.index)));
      const named = new Set([...state.pinned, ...state.groups.flatMap((group) => group.slice(1)),
                             ...Object.keys(state.labels)]);
      shown = data.nodes.filter((node) => wanted.has(nodeId(node.layer, node.index)) || named.has(node.tracer_id));
      const note = document.getElementById("graph-note");
      if (note) note.append(" Of its " + data.nodes.length.toLocaleString("en") + " nodes, the "
                            + shown.length.toLocaleString("en") + " that the drawn weights and the logit reads join are"
                            + " drawn; the layer counts and the node table have them all.");
    }
    const drawnIds = new Set(shown.map((node) => nodeId(node.layer, node.index)));

    const columnOf = new Map();
    const byTracer = new Map();  // circuit-tracer node id -> graph id
    const elements = [];
    for (const node of shown) {
      const id = nodeId(node.layer, node.index);
      columnOf.set(id, node.column);
      byTracer.set(node.tracer_id, id);
      elements.push({ group: "nodes", classes: "unit " + (KIND_CLASSES[node.kind] || ""),
                      data: { id: id, label: String(node.index), number: String(node.index), layer: node.layer,
                              kind: node.kind, index: node.index, tau: node.tau, url: node.url, twin: node.json_url,
                              brief: node.brief, column: node.column, tracer: node.tracer_id } });
    }
    for (const candidate of data.candidates) {
      const id = logitId(candidate.token);
      columnOf.set(id, candidate.column);
      byTracer.set(candidate.tracer_id, id);
      const text = visible(candidate.token);
      elements.push({ group: "nodes", classes: "logit",
                      data: { id: id, label: text, number: text, column: candidate.column, tracer: candidate.tracer_id } });
    }
    const large = shown.length > LARGE;
    const sign = (weight) => (weight < 0 ? " negative" : " positive");
    const heaviest = strongest(data.edges);
    data.edges.forEach((edge, i) => elements.push({
      group: "edges", classes: "weight" + sign(edge.weight),
      data: { id: "w" + i, source: nodeId(edge.src_layer, edge.src_index), target: nodeId(edge.dst_layer, edge.dst_index),
              weight: edge.weight, strength: Math.abs(edge.weight) / heaviest } }));
    const joined = data.residual.filter((link) => drawnIds.has(nodeId(link.src_layer, link.index))
                                                  && drawnIds.has(nodeId(link.dst_layer, link.index)));
    const residual = joined.length <= MOST_RESIDUAL ? joined : [];
    residual.forEach((link, i) => elements.push({
      group: "edges", classes: "residual",
      data: { id: "r" + i, source: nodeId(link.src_layer, link.index), target: nodeId(link.dst_layer, link.index) } }));
    const loudest = strongest(data.logits);
    data.logits.forEach((read, i) => elements.push({
      group: "edges", classes: "readout" + sign(read.weight),
      data: { id: "l" + i, source: nodeId(read.layer, read.index), target: logitId(read.token), weight: read.weight,
              strength: Math.abs(read.weight) / loudest } }));
    if (residual.length < joined.length) {
      const note = document.getElementById("graph-note");
      if (note) note.append(" The residual stream's " + joined.length.toLocaleString("en")
                            + " links are not drawn at this size.");
    }

    const cy = cytoscape({
      container: container,
      elements: elements,
      minZoom: 0.02,
      maxZoom: 4,
      textureOnViewport: large,
      hideEdgesOnViewport: large,
      pixelRatio: large ? 1 : "auto",
      style: [
        // a large view's units carry no number: thousands of labels are most of what styling it costs
        { selector: "node", style: { "width": 22, "height": 22, "label": large ? "" : "data(label)", "font-size": 9,
                                     "color": "#fff", "text-valign": "center", "text-halign": "center",
                                     "background-color": "#6b7385", "min-zoomed-font-size": 6 } },
        { selector: "node.logit, node.labelled, node.header", style: { "label": "data(label)" } },
        { selector: "node.embedding", style: { "background-color": "#9aa1ae" } },
        { selector: "node.read", style: { "background-color": "#5b7fd6" } },
        { selector: "node.qk", style: { "background-color": "#8e5bd6" } },
        { selector: "node.v", style: { "background-color": "#c24fb0" } },
        { selector: "node.neuron", style: { "background-color": "#ea8014" } },
        { selector: "node.write", style: { "background-color": "#1f9a8a" } },
        { selector: "node.logit", style: { "shape": "round-rectangle", "width": 30, "font-size": 12,
                                           "background-color": "#1d2330" } },
        { selector: "node.labelled", style: { "color": "#1d2330", "text-valign": "bottom", "text-margin-y": 2,
                                              "font-size": 10, "text-background-color": "#fff",
                                              "text-background-opacity": 0.8 } },
        { selector: "node.header", style: { "background-opacity": 0, "color": "#6b7385", "font-size": 9, "width": 1,
                                            "height": 1, "text-wrap": "wrap", "text-valign": "top", "events": "no" } },
        { selector: "node.supernode", style: { "shape": "round-rectangle", "background-color": "#f2b134",
                                               "background-opacity": 0.14, "border-width": 2, "border-color": "#c98a00",
                                               "label": "data(label)", "color": "#7a5200", "font-size": 11,
                                               "font-weight": "bold", "text-valign": "top", "text-halign": "center",
                                               "padding": 8 } },
        { selector: "node.pinned", style: { "border-width": 3, "border-color": "#f2b134", "border-style": "double" } },
        { selector: "node.focus", style: { "border-width": 3, "border-color": "#1d2330" } },
        { selector: "edge", style: { "curve-style": large ? "haystack" : "bezier", "opacity": 0.8 } },
        { selector: "edge.weight, edge.readout", style: { "width": "mapData(strength, 0, 1, 0.6, 7)" } },
        { selector: "edge.positive", style: { "line-color": "#1f7a4d" } },
        { selector: "edge.negative", style: { "line-color": "#b3372f" } },
        { selector: "edge.residual", style: { "width": 1, "line-color": "#b9bfcc", "line-style": "dashed",
                                              "opacity": 0.6 } },
        { selector: ".faded", style: { "opacity": 0.12 } },
      ],
    });

    // Dagre ranks are every other integer (it halves the rank separation to leave room for edge labels); columns with
    // no node are skipped, and dagre's own root node (it adds one to every graph) goes before the first.
    const ranks = new Map([...new Set(columnOf.values())].sort((a, b) => a - b).map((column, i) => [column, 2 * i]));
    if (large) {
      // Plain columns: each in index order, side by side in forward order.
      const filled = new Map();
      cy.nodes().sort((a, b) => a.data("column") - b.data("column") || (a.data("index") || 0) - (b.data("index") || 0))
        .forEach((node) => {
          const column = node.data("column");
          const row = filled.get(column) || 0;
          filled.set(column, row + 1);
          node.position({ x: ranks.get(column) * 60, y: row * 26 });
        });
    } else {
      const ranker = (graph) => graph.nodes().forEach((id) => {
        graph.node(id).rank = columnOf.has(id) ? ranks.get(columnOf.get(id)) : -2;
      });
      cy.elements().not("edge.residual, edge.readout")
        .layout({ name: "dagre", rankDir: "LR", ranker: ranker, nodeSep: 8, edgeSep: 4, rankSep: 44, fit: false }).run();
    }
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
      cy.elements().not(node.closedNeighborhood()).not(node.ancestors()).addClass("faded");
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

    // The unit's layer and index (and the reader's label), tau, density and max, top tokens and a few short
    // contexts around its peaks.
    function showBrief(node) {
      const brief = node.data("brief");
      const shown = ++briefs;
      briefBox.replaceChildren();
      const head = element("div", "brief-head", node.data("layer") + ":" + node.data("index"));
      const tau = node.data("tau");
      if (tau !== null && tau !== undefined) head.append(element("span", "muted", " · tau " + number(tau)));
      briefBox.append(head);
      const label = state.labels[node.data("tracer")];
      if (label) briefBox.append(element("div", "brief-label", label));
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
      briefBox.append(element("div", "muted", "click to open its page; Ctrl- or Shift-click to pin it"));
      const at = node.renderedPosition();
      briefBox.hidden = false;
      const left = Math.min(at.x + 16, container.clientWidth - briefBox.offsetWidth - 4);
      briefBox.style.left = Math.max(4, left) + "px";
      briefBox.style.top = (at.y + 16) + "px";
    }

    return { cy: cy, byTracer: byTracer };
  }

  // -- the reader's view: pins, groups, labels -------------------------------------------------------------------

  function setUpView(graph) {
    const cy = graph.cy;
    const pinnedList = document.getElementById("pinned-list");
    const groupList = document.getElementById("group-list");
    const groupForm = document.getElementById("group-form");
    const groupName = document.getElementById("group-name");
    const nodeOf = (tracer) => (graph.byTracer.has(tracer) ? cy.getElementById(graph.byTracer.get(tracer)) : null);
    const nameOf = (node) => (node.hasClass("logit") ? "logit " + node.data("label")
      : node.data("layer") + ":" + node.data("index"));
    cy.on("tap", "node.unit, node.logit", (event) => {
      const original = event.originalEvent || {};
      if (original.ctrlKey || original.metaKey || original.shiftKey) {
        togglePin(event.target.data("tracer"));
      } else if (event.target.hasClass("unit")) {
        window.location.assign(event.target.data("url"));
      }
    });

    if (groupForm) groupForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const members = state.pinned.filter((tracer) => nodeOf(tracer));
      if (!members.length) return;
      const name = groupName.value.trim() || "group " + (state.groups.length + 1);
      state.groups = state.groups.map((group) => [group[0], ...group.slice(1).filter((m) => !members.includes(m))])
        .filter((group) => group.length > 1);
      state.groups.push([name, ...members]);
      groupName.value = "";
      changed();
    });

    function togglePin(tracer) {
      state.pinned = state.pinned.includes(tracer) ? state.pinned.filter((t) => t !== tracer)
        : [...state.pinned, tracer];
      changed();
    }

    function changed() {
      window.history.replaceState(null, "", withState(window.location.href, state));
      apply();
    }

    // Draw the state: pinned marks, labels, group boxes; then the panel, the download and the k links.
    function apply() {
      cy.batch(() => {
        cy.nodes(".supernode").forEach((box) => box.children().move({ parent: null }));
        cy.remove(cy.nodes(".supernode"));
        cy.nodes(".unit, .logit").forEach((node) => {
          const tracer = node.data("tracer");
          node.toggleClass("pinned", state.pinned.includes(tracer));
          const label = state.labels[tracer];
          node.data("label", label || node.data("number"));
          node.toggleClass("labelled", Boolean(label));
        });
        state.groups.forEach(([name, ...members], i) => {
          const nodes = members.map(nodeOf).filter(Boolean);
          if (!nodes.length) return;
          cy.add({ group: "nodes", classes: "supernode", data: { id: "supernode:" + i, label: name } });
          nodes.forEach((node) => node.move({ parent: "supernode:" + i }));
        });
      });
      drawPanel();
      const download = document.getElementById("download-graph");
      const links = download ? [download, ...kLinks()] : [...kLinks()];
      links.forEach((link) => link.setAttribute("href", withState(link.getAttribute("href"), state)));
      cy.resize();  // the panel above the graph grew or shrank: cytoscape must find its canvas again
    }

    function drawPanel() {
      if (!pinnedList) return;  // a page without the panel (embedded): the graph shows the view alone
      pinnedList.replaceChildren();
      state.pinned.forEach((tracer) => {
        const node = nodeOf(tracer);
        const item = element("li", "pinned-node");
        item.dataset.tracer = tracer;
        item.append(element("span", "pinned-name", node ? nameOf(node) : tracer + " (not at this k)"));
        const input = element("input", "label-input");
        input.type = "text";
        input.placeholder = "label";
        input.value = state.labels[tracer] || "";
        input.setAttribute("aria-label", "label of " + (node ? nameOf(node) : tracer));
        input.addEventListener("change", () => {
          if (input.value.trim()) state.labels[tracer] = input.value.trim();
          else delete state.labels[tracer];
          changed();
        });
        const unpin = element("button", "unpin", "unpin");
        unpin.type = "button";
        unpin.addEventListener("click", () => togglePin(tracer));
        item.append(input, unpin);
        pinnedList.append(item);
      });
      if (!state.pinned.length) pinnedList.append(element("li", "muted", "No node pinned."));
      groupList.replaceChildren();
      state.groups.forEach(([name, ...members], i) => {
        const item = element("li", "group");
        item.append(element("strong", "", name), document.createTextNode(
          ": " + members.map((tracer) => (nodeOf(tracer) ? nameOf(nodeOf(tracer)) : tracer)).join(", ") + " "));
        const ungroup = element("button", "ungroup", "ungroup");
        ungroup.type = "button";
        ungroup.addEventListener("click", () => {
          state.groups.splice(i, 1);
          changed();
        });
        item.append(ungroup);
        groupList.append(item);
      });
    }

    apply();
  }

  // -- held-out pairs: the heatmap and the heads' attention ---------------------------------------------------------

  function drawPairs() {
    const source = document.getElementById("activations-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    if (data.activations && data.activations.nodes.length) drawHeatmap(data.activations);
    if (data.heads && data.heads.length && data.activations) drawHeads(data.heads, data.activations.pairs);
  }

  function drawHeatmap(acts) {
    const holder = document.getElementById("heatmap");
    const brief = document.getElementById("pair-brief");
    if (!holder) return;
    const SVG = "http://www.w3.org/2000/svg";
    const MOST_ROWS = 300, LABEL = 150, ROW = 13, TAIL = 24;
    const rows = acts.nodes.slice(0, MOST_ROWS);
    const pairs = acts.pairs.length;
    const cell = Math.max(6, Math.min(20, Math.floor((holder.clientWidth - LABEL - 8) / pairs)));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", LABEL + cell * pairs + 4);
    svg.setAttribute("height", ROW * rows.length + 4);
    svg.id = "heatmap-svg";
    const svgElement = (tag, attributes) => {
      const made = document.createElementNS(SVG, tag);
      Object.entries(attributes).forEach(([key, value]) => made.setAttribute(key, value));
      return made;
    };
    rows.forEach((node, r) => {
      const differences = node.values.map(([first, second]) => first - second);
      const scale = differences.reduce((most, d) => Math.max(most, Math.abs(d)), 0) || 1;
      const link = svgElement("a", { href: node.url, class: "heatmap-node" });
      const name = svgElement("text", { x: LABEL - 4, y: r * ROW + ROW - 3, "text-anchor": "end" });
      name.textContent = node.layer + ":" + node.index;
      link.append(name);
      svg.append(link);
      differences.forEach((difference, p) => {
        const strength = Math.abs(difference) / scale;
        const colour = difference >= 0 ? "31, 122, 77" : "179, 55, 47";
        const rect = svgElement("rect", { x: LABEL + p * cell, y: r * ROW, width: cell - 1, height: ROW - 1,
                                          fill: "rgba(" + colour + ", " + strength.toFixed(3) + ")", class: "cell" });
        rect.dataset.row = r;
        rect.dataset.pair = p;
        rect.dataset.difference = difference;
        svg.append(rect);
      });
    });
    holder.replaceChildren(svg);
    if (acts.nodes.length > MOST_ROWS) {
      holder.append(element("p", "muted", "The first " + MOST_ROWS + " of " + acts.nodes.length
                            + " nodes are drawn; the twin has them all."));
    }

    // The pair's two prompts, their last tokens with those that differ marked, and the node's values.
    const tail = (tokens, other) => {
      const start = Math.max(0, tokens.length - TAIL);
      const code = element("code");
      tokens.slice(start).forEach((token, i) => {
        const differs = other[start + i] !== token;
        code.append(differs ? element("mark", "", visible(token)) : document.createTextNode(visible(token)));
      });
      return code;
    };
    svg.addEventListener("mouseover", (event) => {
      const target = event.target;
      if (!target.classList || !target.classList.contains("cell")) return;
      const node = rows[Number(target.dataset.row)];
      const p = Number(target.dataset.pair);
      const pair = acts.pairs[p];
      const [first, second] = node.values[p];
      brief.replaceChildren(element("div", "brief-head", node.layer + ":" + node.index + " · pair " + (p + 1)));
      pair.tokens.forEach((tokens, which) => {
        const line = element("div", "pair-prompt");
        line.append(element("span", "muted", "answer " + visible(pair.answers[which]) + " (full model p "
                                            + number(pair.p_correct[which]) + "): "),
                    tail(tokens, pair.tokens[1 - which]),
                    element("span", "pair-value", " = " + number(which === 0 ? first : second, 4)));
        brief.append(line);
      });
      brief.append(element("div", "brief-stats", "difference " + number(first - second, 4)));
      brief.hidden = false;
      const box = holder.getBoundingClientRect();
      const at = target.getBoundingClientRect();
      brief.style.left = Math.max(4, Math.min(at.left - box.left + 16, holder.clientWidth - brief.offsetWidth - 4)) + "px";
      brief.style.top = (at.top - box.top + 18) + "px";
    });
    svg.addEventListener("mouseleave", () => { brief.hidden = true; });
  }

  function drawHeads(heads, pairs) {
    const headChoice = document.getElementById("head-choice");
    const pairChoice = document.getElementById("head-pair");
    const holder = document.getElementById("head-pattern");
    if (!headChoice || !pairChoice || !holder) return;
    const draw = () => {
      const head = heads[Number(headChoice.value)];
      const p = Number(pairChoice.value);
      holder.replaceChildren();
      head.patterns[p].forEach((weights, which) => {
        const tokens = pairs[p].tokens[which];
        const most = weights.reduce((top, w) => Math.max(top, w), 0) || 1;
        const line = element("pre", "code pattern");
        line.dataset.which = which;
        tokens.forEach((token, i) => {
          const span = element("span", "pt", visible(token));
          const weight = weights[i] || 0;
          span.style.background = "rgb(var(--act-pos) / " + (weight / most).toFixed(3) + ")";
          span.title = "attention " + number(weight, 3);
          line.append(span);
        });
        const sink = head.sink ? " · sink " + number(head.sink[p][which], 3) : "";
        holder.append(element("div", "muted", "prompt answering " + visible(pairs[p].answers[which]) + sink), line);
      });
    };
    headChoice.addEventListener("change", draw);
    pairChoice.addEventListener("change", draw);
    draw();
  }
});
