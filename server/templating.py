"""Jinja templates and static files, found through the ``templates`` and ``static`` data packages.

They are namespace packages (no ``__init__``), shipped as package data. ``importlib.resources.files`` returns a
``MultiplexedPath`` for those, which neither Jinja nor ``StaticFiles`` accepts, so we take the directory from the
import spec: the same lookup, editable or installed.
"""

import importlib.util
import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from store.keys import CardKey, EdgeKind, ExampleKind, ModelKind
from store.tokens import BYTE


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"data package {name!r} is not installed (pip install -e . from the repository)")
    return Path(next(iter(spec.submodule_search_locations)))


def percent(value: Any, digits: int = 1) -> str:
    """0.9375 -> '93.8%'; anything that is not a fraction is shown as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return f"{value:.{digits}%}"
    return str(value)


def duration(seconds: Any) -> str:
    """754.2 -> '12 min 34 s', 5400 -> '1 h 30 min': how long training took, to the precision a reader cares for."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return str(seconds)
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


WHITESPACE_MARKS = str.maketrans({" ": "␣", "\n": "⏎", "\t": "→", "\r": "␍"})
# Characters that show nothing, or nothing a reader can tell apart: controls, format characters (zero-width space,
# bidi overrides), surrogates, private use, unassigned, separators and spaces other than " "
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
# A token text's parts: a byte (``store.tokens``), a run of whitespace, a run of anything else
TOKEN_PARTS = re.compile(f"({BYTE.pattern})|([ \n\t\r]+)|([^ \n\t\r<]+|<)")


def _by_number(char: str) -> str:
    """An invisible character by its code point: '\\x13' -> '<0x13>' (an ASCII control is one byte, written as
    ``store.tokens`` writes bytes), '\\u200b' -> '<U+200B>'."""
    return f"<0x{ord(char):02X}>" if char.isascii() else f"<U+{ord(char):04X}>"


def _marked(kind: str, text: str) -> str:
    return f'<span class="{kind}">{escape(text)}</span>'


def _token_html(token: str, whitespace: Callable[[str], str]) -> Markup:
    """A token's text as HTML: its text escaped, each byte and invisible character by number in a ``byte`` span, and
    its runs of whitespace as ``whitespace`` shows them."""
    html = []
    for byte, space, run in TOKEN_PARTS.findall(token):
        if byte:
            html.append(_marked("byte", byte))
        elif space:
            html.append(whitespace(space))
        elif run.isascii() and run.isprintable():
            html.append(escape(run))
        else:
            html += (_marked("byte", _by_number(c)) if unicodedata.category(c) in INVISIBLE else escape(c) for c in run)
    return Markup("".join(html))


def _whitespace_marks(space: str) -> str:
    return _marked("ws", space.translate(WHITESPACE_MARKS))


def _whitespace_in_code(space: str) -> str:
    """Spaces and tabs as they are; a newline after an empty ``nl`` marker that CSS draws as ⏎ (not text, so copying
    gives the source); a carriage return marked (HTML would read it as a line break)."""
    return "".join('<i class="nl"></i>\n' if c == "\n" else _whitespace_marks(c) if c == "\r" else c for c in space)


def visible(token: str) -> Markup:
    """A token alone (a chip, a table cell), so that no token is blank and none looks like another: its whitespace as
    marks (' return' -> '␣return', '\\n' -> '⏎', '\\t' -> '→'), its bytes and invisible characters by number
    (<0xBC>, <0x13>, <U+200B>), each mark in a span that CSS sets apart from the token's own text."""
    return _token_html(token, _whitespace_marks)


def source_text(token: str) -> Markup:
    """A token inside a block of code: its text as is, a newline marked for the eye (``_whitespace_in_code``), its
    bytes and invisible characters by number as ``visible`` shows them."""
    return _token_html(token, _whitespace_in_code)


templates = Jinja2Templates(directory=package_dir("templates"))
templates.env.filters.update(percent=percent, duration=duration, visible=visible, source_text=source_text,
                             log10=math.log10)  # log10: the circuit page's loss-vs-k chart has a log axis
templates.env.globals["CardKey"] = CardKey  # language-model card sections, by the names the job writes them under
templates.env.globals.update(ModelKind=ModelKind, ExampleKind=ExampleKind, EdgeKind=EdgeKind)


# ``?embed=`` on the pages that have an embed view (unit and circuit pages): its values, and whether each asks for it
EMBED_VALUES = {"1": True, "true": True, "0": False, "false": False}


def embed_flag(value: str | None) -> bool:
    """``?embed=1`` (or ``true``, Neuronpedia's spelling): the page for an iframe; absent, ``0`` or ``false``: the
    whole page. Anything else is a 400 that says which values there are."""
    if value is None:
        return False
    if value not in EMBED_VALUES:
        from server.errors import BadRequest  # server.errors renders its pages with this module
        from server.pages.common import echo

        raise BadRequest(f"embed {echo(value)} is neither 1 (or true: the page alone, for an iframe) nor 0 (or false)")
    return EMBED_VALUES[value]


def render_page(
    request: Request, name: str, page: dict[str, Any], status_code: int = 200, embed: bool | None = None,
    **kwargs: Any
) -> HTMLResponse:
    """Render a page from the same dict its JSON twin returns, advertising the twin in a ``Link`` header.

    ``embed`` is the one flag of embeds, read by ``base.html``: None for a page without an embed view; False for the
    whole page of one that has it, which then offers its ``<iframe>`` snippet; True for its embed view: the page's
    ``embed`` block alone, without header, navigation or footer, its links opening outside the frame."""
    response = templates.TemplateResponse(request, name, {"page": page, "embed": embed}, status_code=status_code,
                                          **kwargs)
    if "json_url" in page:
        response.headers["Link"] = f'<{page["json_url"]}>; rel="alternate"; type="application/json"'
    return response
