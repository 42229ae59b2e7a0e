// Keyboard navigation: ←/→ (and k/j) follow <link rel=prev/next>, ↑ (and u) follows <link rel=up>.
(function () {
  const keys = { ArrowLeft: "prev", k: "prev", ArrowRight: "next", j: "next", ArrowUp: "up", u: "up" };

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    const rel = keys[event.key];
    const link = rel && document.querySelector('link[rel="' + rel + '"]');
    if (!link) return;
    event.preventDefault();
    window.location.href = link.href;
  });
})();

// Contexts on language-model unit pages: hovering a token writes it and its activation (its title) into the
// context's readout, so the value shows at once and stays readable; without script the title still shows it.
(function () {
  const visible = (text) => text.replace(/ /g, "·").replace(/\n/g, "⏎").replace(/\t/g, "→");

  document.addEventListener("mouseover", function (event) {
    const token = event.target.closest && event.target.closest(".ctx .t");
    if (!token) return;
    const readout = token.closest(".ctx").querySelector(".readout");
    if (readout) readout.textContent = visible(token.textContent) + " = " + token.title;
  });
})();
