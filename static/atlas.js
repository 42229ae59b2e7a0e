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

// A token alone, as plain text: what server/templating.py's `visible` shows, without its spans. Whitespace becomes
// marks (␣ ⏎ → ␍) and invisible characters their number (<0x13>, <U+200B>); a byte that is not part of a whole
// character is stored as <0xBC> already (store/tokens.py). For the context readout below and the circuit page's
// briefs (static/circuit.js), as window.atlascope.visibleToken.
window.atlascope = {
  visibleToken: (function () {
    const marks = { " ": "␣", "\n": "⏎", "\t": "→", "\r": "␍" };
    const invisible = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/gu;  // as templating.INVISIBLE
    const byNumber = (char) => {
      const code = char.codePointAt(0);
      return code < 0x80 ? "<0x" + code.toString(16).toUpperCase().padStart(2, "0") + ">"
        : "<U+" + code.toString(16).toUpperCase().padStart(4, "0") + ">";
    };
    return (text) => text.replace(/[ \n\t\r]/g, (char) => marks[char]).replace(invisible, byNumber);
  })(),
};

// Contexts on language-model unit pages: hovering a token writes it and its activation (its title) into the
// context's readout, so the value shows at once and stays readable; without script the title still shows it.
document.addEventListener("mouseover", function (event) {
  const token = event.target.closest && event.target.closest(".ctx .t");
  if (!token) return;
  const readout = token.closest(".ctx").querySelector(".readout");
  if (readout) readout.textContent = window.atlascope.visibleToken(token.textContent) + " = " + token.title;
});
