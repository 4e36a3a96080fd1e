"""The scripted expert: composes a page from a small design system and checks it in the browser.

The design system (written for this project): font pairings from the families the frontend
image carries (a display face for headings, a distinctive text face for the body), a paper or
ink palette per theme with the brand colour as the accent (button text black or white,
whichever contrasts more, so AA always holds), and one layout block per page kind that
holds the brief's required elements and texts. Responsiveness comes from fluid type
(``clamp``), ``auto-fit`` grids with ``min(100%, ...)`` tracks, wrapping flex rows and
scroll containers around tables and code.

Episode: ``write_file index.html`` -> ``render_page`` at 375 px -> ``render_page`` at 1280
px -> if a report flags horizontal overflow, rewrite with the wrapping rules tightened and
render again -> ``submit index.html``. It reads the brief's constraints from the task's
reference (by the episode's task id); every string it writes comes from the brief itself.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Message

PAGE = "index.html"
PAIRINGS = [
    ("League Spartan", "EB Garamond"),
    ("URW Gothic", "Gentium Plus"),
    ("Comfortaa", "Cantarell"),
    ("JetBrains Mono", "Gentium Book Plus"),
    ("P052", "Cantarell"),
    ("URW Bookman", "Carlito"),
]
PALETTES = {
    "light": {"bg": "#f5efe3", "surface": "#fffaf0", "text": "#1d1a16", "muted": "#4a443c", "line": "#d8cfbf"},
    "dark": {"bg": "#121416", "surface": "#1c1f23", "text": "#f2ede4", "muted": "#c9c2b6", "line": "#3a3f45"},
}


def _luminance(colour: str) -> float:
    def lin(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    c = colour.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def on_colour(background: str) -> str:
    """Black or white text, whichever contrasts more with ``background`` (>= 4.58:1 for any colour)."""
    lum = _luminance(background)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def _pick(key: str, options: list[Any]) -> Any:
    return options[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(options)]


def stylesheet(brand: str, theme: str, display: str, body: str, strict: bool = False) -> str:
    p = PALETTES[theme]
    css = f"""
:root {{ --bg: {p["bg"]}; --surface: {p["surface"]}; --text: {p["text"]}; --muted: {p["muted"]};
  --line: {p["line"]}; --brand: {brand}; --on-brand: {on_colour(brand)}; }}
* {{ box-sizing: border-box; }}
html {{ background: var(--bg); }}
body {{ margin: 0; background: var(--bg); color: var(--text); font-family: '{body}', serif;
  font-size: 1.05rem; line-height: 1.6; }}
h1, h2, h3 {{ font-family: '{display}', sans-serif; line-height: 1.1; letter-spacing: -0.01em; margin: 0 0 .5em; }}
h1 {{ font-size: clamp(2.2rem, 7vw, 4.8rem); }}
h2 {{ font-size: clamp(1.5rem, 4vw, 2.4rem); }}
a {{ color: var(--text); text-decoration-color: var(--brand); text-decoration-thickness: 3px;
  text-underline-offset: 4px; }}
.wrap {{ width: min(72rem, 100% - 2.5rem); margin-inline: auto; }}
header.top {{ border-bottom: 4px solid var(--brand); background: var(--surface); }}
header.top .wrap {{ display: flex; flex-wrap: wrap; gap: .75rem 1.5rem; align-items: center;
  justify-content: space-between; padding-block: 1rem; }}
nav {{ display: flex; flex-wrap: wrap; gap: .5rem 1.25rem; }}
.mark {{ font-family: '{display}', sans-serif; font-weight: 700; font-size: 1.3rem; }}
.hero {{ padding-block: clamp(2.5rem, 9vw, 6rem); }}
.lede {{ color: var(--muted); max-width: 38rem; font-size: 1.2rem; }}
.btn {{ display: inline-block; background: var(--brand); color: var(--on-brand); border: 0; border-radius: 999px;
  padding: .8rem 1.5rem; font: 700 1rem '{display}', sans-serif; text-decoration: none; cursor: pointer;
  transition: transform .2s ease, box-shadow .2s ease; }}
.btn:hover {{ transform: translateY(-2px); box-shadow: 0 6px 0 var(--line); }}
.grid {{ display: grid; gap: 1.25rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 16rem), 1fr)); }}
.card {{ background: var(--surface); border: 1px solid var(--line); border-top: 6px solid var(--brand);
  border-radius: 14px; padding: 1.4rem; animation: rise .5s ease both; }}
section {{ padding-block: 2.5rem; }}
.muted {{ color: var(--muted); }}
table {{ border-collapse: collapse; width: 100%; min-width: 28rem; }}
th, td {{ text-align: left; padding: .6rem .8rem; border-bottom: 1px solid var(--line); }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
pre {{ background: var(--surface); border-left: 6px solid var(--brand); padding: 1rem; overflow-x: auto;
  white-space: pre-wrap; font-family: 'JetBrains Mono', monospace; }}
form {{ display: grid; gap: 1rem; max-width: 34rem; }}
label {{ display: grid; gap: .35rem; font-weight: 600; }}
input, select, textarea {{ font: inherit; color: var(--text); background: var(--surface);
  border: 2px solid var(--line); border-radius: 10px; padding: .6rem .8rem; width: 100%; }}
footer {{ border-top: 1px solid var(--line); padding-block: 2rem; color: var(--muted); }}
@keyframes rise {{ from {{ transform: translateY(12px); }} to {{ transform: none; }} }}
@media (prefers-reduced-motion: reduce) {{ * {{ animation: none !important; transition: none !important; }} }}
"""
    if strict:  # the fix pass: nothing may be wider than the viewport
        css += "\n* { min-width: 0; overflow-wrap: anywhere; } img, svg, table, pre { max-width: 100%; }\n"
    return css


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def body_blocks(ref: dict[str, Any]) -> str:
    """The page's content for its kind, holding every required element and text."""
    kind, subject, texts = ref["kind"], ref["subject"], [_e(t) for t in ref["texts"]]
    name = texts[0]
    extra = texts[1:]
    subject_e = _e(subject)
    nav = "<nav><a href='#one'>Overview</a><a href='#two'>Details</a><a href='#three'>Contact</a></nav>"
    top = f"<header class='top'><div class='wrap'><span class='mark'>{name}</span>{nav}</div></header>"
    say = " &middot; ".join(extra)
    if kind == "landing":
        main = (
            f"<section class='hero wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p>"
            f"<a class='btn' href='#three'>{texts[1]}</a></section>"
            "<section class='wrap' id='two'><div class='grid'>"
            + "".join(
                f"<div class='card'><h3>{t}</h3><p class='muted'>{subject_e}.</p></div>"
                for t in ("Made with care", "Close to you", "Fair prices")
            )
            + f"</div></section><section class='wrap' id='three'><h2>{texts[1]}</h2>"
            f"<p>{subject_e}.</p></section>"
        )
    elif kind == "dashboard":
        rows = "".join(f"<tr><td>{name} {i}</td><td>{90 - 7 * i}%</td><td>{12 + 5 * i}</td></tr>" for i in range(1, 7))
        main = (
            f"<section class='wrap' id='one'><h1>{subject_e}</h1><p class='lede'>{say}</p>"
            "<div class='grid'>"
            + "".join(
                f"<div class='card'><p class='muted'>{t}</p><h2>{40 + 13 * i}</h2></div>"
                for i, t in enumerate(extra or [name])
            )
            + f"</div></section><section class='wrap' id='two'><div class='scroll'><table><thead><tr><th>{name}</th>"
            f"<th>{extra[-1] if extra else name}</th><th>Count</th></tr></thead><tbody>{rows}</tbody></table></div>"
            "</section>"
        )
    elif kind == "portfolio":
        arts = "".join(
            f"<article class='card'><h3>Project {i}</h3><p class='muted'>{subject_e}.</p></article>"
            for i in range(1, 5)
        )
        main = (
            f"<section class='hero wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p></section>"
            f"<section class='wrap' id='two'><h2>{extra[0] if extra else name}</h2><div class='grid'>{arts}</div>"
            f"</section><section class='wrap' id='three'><a class='btn' href='mailto:hello@example.org'>"
            "Write to me</a></section>"
        )
    elif kind == "pricing":
        arts = "".join(
            f"<article class='card'><h2>{t}</h2><p class='mark'>${9 * (i + 1)}/mo</p><ul>"
            + "".join(f"<li>{f}</li>" for f in ("Everything before", f"{5 * (i + 1)} seats", "Email support"))
            + f"</ul><a class='btn' href='#three'>Choose {t}</a></article>"
            for i, t in enumerate(texts)
        )
        main = (
            f"<section class='hero wrap' id='one'><h1>{subject_e}</h1><p class='lede'>Plans</p></section>"
            f"<section class='wrap' id='two'><div class='grid'>{arts}</div></section>"
        )
    elif kind == "docs":
        top = (
            "<header class='top'><div class='wrap'><span class='mark'>Docs</span><nav>"
            + "".join(
                f"<a href='#s{i}'>{t}</a>" for i, t in enumerate(["Overview", "Setup", "Usage", "Reference", "FAQ"])
            )
            + "</nav></div></header>"
        )
        code = _e(extra[0]) if extra else name
        main = (
            f"<section class='wrap' id='s0'><h1>{name}</h1><p class='lede'>{subject_e}.</p>"
            + "".join(
                f"<h2 id='s{i}'>{t}</h2><p>{subject_e}.</p>" for i, t in enumerate(["Setup", "Usage", "Reference"], 1)
            )
            + f"<pre><code>{code}</code></pre></section>"
        )
    elif kind == "form":
        main = (
            f"<section class='wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p>"
            "<form onsubmit='event.preventDefault()'><label>Full name<input name='name' autocomplete='name'></label>"
            "<label>Email<input type='email' name='email' autocomplete='email'></label>"
            + "".join(f"<label>{t}<input name='f{i}'></label>" for i, t in enumerate(extra))
            + f"<button class='btn' type='submit'>{name}</button></form></section>"
        )
    elif kind == "error":
        main = (
            f"<section class='hero wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p>"
            f"<a class='btn' href='/'>{extra[0] if extra else 'Home'}</a></section>"
        )
    elif kind == "product":
        svg = (
            "<svg viewBox='0 0 200 140' width='100%' style='max-width:28rem' role='img' aria-label='product'>"
            "<rect x='20' y='20' width='160' height='100' rx='24' fill='var(--brand)'/>"
            "<circle cx='100' cy='70' r='28' fill='var(--surface)'/></svg>"
        )
        main = (
            f"<section class='hero wrap grid' id='one'><div>{svg}</div><div><h1>{name}</h1>"
            f"<p class='lede'>{subject_e}.</p><ul><li>Built to last</li><li>Two-year warranty</li>"
            f"<li>Free returns</li></ul><button class='btn' type='button'>{extra[0] if extra else 'Buy'}</button>"
            "</div></section>"
        )
    elif kind == "event":
        items = "".join(
            f"<li><strong>{9 + i}:00</strong> {t}</li>"
            for i, t in enumerate(["Doors open", "Opening", "Main programme", "Closing"])
        )
        main = (
            f"<section class='hero wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p></section>"
            f"<section class='wrap' id='two'><h2>{extra[0] if extra else 'Schedule'}</h2><ol>{items}</ol>"
            "</section><section class='wrap' id='three'><form onsubmit='event.preventDefault()'>"
            "<label>Email<input type='email' name='email'></label>"
            f"<button class='btn' type='submit'>{extra[-1] if extra else 'Register'}</button></form></section>"
        )
    else:  # menu
        sections = "".join(
            f"<section class='wrap'><h2>{t}</h2><ul>"
            + "".join(f"<li>{t} no. {i} <span class='muted'>&mdash; {7 + i}</span></li>" for i in range(1, 5))
            + "</ul></section>"
            for t in [*extra, "Dolci"][:2] or ["Dishes", "Dolci"]
        )
        main = (
            f"<section class='hero wrap' id='one'><h1>{name}</h1><p class='lede'>{subject_e}.</p></section>{sections}"
        )
    foot = f"<footer><div class='wrap'>{name} &middot; {subject_e}</div></footer>"
    return f"{top}<main>{main}</main>{foot}"


def compose_page(ref: dict[str, Any], key: str, strict: bool = False) -> str:
    """A complete, self-contained page for the brief in ``ref`` (``key`` picks the font pairing)."""
    display, body = _pick(key, PAIRINGS)
    css = stylesheet(ref["brand"], ref["theme"], display, body, strict=strict)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(ref['texts'][0])}</title><style>{css}</style></head>"
        f"<body>{body_blocks(ref)}</body></html>\n"
    )


class ExpertPolicy(Policy):
    """The frontend-design expert (see the module docstring).

    Args:
        tasks: The env's task source (the expert reads a brief's reference by task id).
    """

    policy_id = "expert"

    def __init__(self, tasks: Any) -> None:
        self.tasks = tasks
        self.ref: dict[str, Any] | None = None
        self.key = ""
        self.step = 0
        self.fixed = False

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        try:
            task = self.tasks.get(info["task_id"])
            self.ref, self.key = task.reference, task.id
        except KeyError:  # a brief from outside the task source: a generic light landing page
            prompt = next((m["content"] for m in observation if m["role"] == "user"), "a page")
            self.ref = {
                "kind": "landing",
                "subject": prompt.splitlines()[0][:80],
                "brand": "#0e7c86",
                "theme": "light",
                "texts": ["Welcome", "Get in touch"],
            }
            self.key = prompt
        self.step = 0
        self.fixed = False

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        assert self.ref is not None, "reset() first"
        self.step += 1
        last = next((m.get("content") or "" for m in reversed(observation) if m.get("role") == "tool"), "")
        if self.step == 1:
            return render_tool_call_text("write_file", {"path": PAGE, "content": compose_page(self.ref, self.key)})
        if self.step == 2:
            return render_tool_call_text("render_page", {"path": PAGE, "width": 375})
        if "HORIZONTAL OVERFLOW" in last and not self.fixed:
            self.fixed = True
            self.step = 1  # render both widths again after the fix
            return render_tool_call_text(
                "write_file", {"path": PAGE, "content": compose_page(self.ref, self.key, strict=True)}
            )
        if self.step == 3:
            return render_tool_call_text("render_page", {"path": PAGE, "width": 1280})
        return render_tool_call_text("submit", {"answer": PAGE})
