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
