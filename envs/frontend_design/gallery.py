"""A gallery of graded pages: expert pages and deliberately broken ones, as PNGs with their scores.

    python -m skillgym.envs.frontend_design.gallery --out DIR [--briefs N]

Writes ``DIR/<name>-1280.png`` and ``DIR/<name>-375.png`` for each page and ``DIR/index.html``
showing them with the grade's score and components, and ``DIR/gallery.json``. The broken
pages are the first brief's expert page with one defect each: blank, a console error,
overflow on a phone, low-contrast text, an external request.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path
from typing import Any

from skillgym.sandbox.factory import make_sandbox
from skillgym.types import Task

from .browser import probe
from .expert import PALETTES, compose_page
from .grader import DesignGrader


def broken_pages(good: str, theme: str) -> dict[str, str]:
    """``good`` with one defect each (the names say which component they should lose)."""
    p = PALETTES[theme]
    faint = p["line"]
    return {
        "blank": f"<!doctype html><html><head><meta name='viewport' content='width=device-width'></head>"
        f"<body style='background:{p['bg']}'></body></html>",
        "console-error": good.replace("</body>", "<script>missingFunction()</script></body>"),
        "mobile-overflow": good.replace("</main>", "<div style='width:900px;height:10px'></div></main>"),
        "low-contrast": good.replace(f"--text: {p['text']}", f"--text: {faint}").replace(
            f"--muted: {p['muted']}", f"--muted: {faint}"
        ),
        "external-request": good.replace(
            "</main>", "<img src='https://example.com/x.png' alt='' width='1' height='1'></main>"
        ),
    }


def build_gallery(tasks: list[Task], out: Path, sandbox_config: Any) -> list[dict[str, Any]]:
    """Render and grade the expert page of each task and the broken variants of the first."""
    out.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[str, Task, str]] = [(t.id, t, compose_page(t.reference, t.id)) for t in tasks]
    first = tasks[0]
    pages += [
        (f"{first.id}-{name}", first, page)
        for name, page in broken_pages(pages[0][2], first.reference["theme"]).items()
    ]
    grader, entries = DesignGrader(), []
    with make_sandbox(sandbox_config) as sandbox:
        for name, task, page in pages:
            sandbox.write_file(f"{name}.html", page)
            grade = grader.grade(task, f"{name}.html", [], sandbox)
            shots = probe(sandbox, f"{name}.html", [1280, 375], screenshot_dir=None, inline_png=True)
            files = {}
            for render in shots.get("renders", []):
                data = render.get("screenshot", {}).get("png_base64")
                if data:
                    file = out / f"{name}-{render['width']}.png"
                    file.write_bytes(base64.b64decode(data))
                    files[str(render["width"])] = file.name
            entries.append(
                {
                    "name": name,
                    "task_id": task.id,
                    "score": grade.score,
                    "components": grade.components,
                    "screenshots": files,
                }
            )
    (out / "gallery.json").write_text(json.dumps(entries, indent=2), encoding="utf-8")
    (out / "index.html").write_text(_html(entries), encoding="utf-8")
    return entries


def _html(entries: list[dict[str, Any]]) -> str:
    cards = []
    for e in entries:
        lost = ", ".join(f"{k} {v:g}" for k, v in e["components"].items() if v < 1) or "nothing lost"
        imgs = "".join(
            f"<img src='{html.escape(f)}' alt='{html.escape(e['name'])} at {w}px' class='w{w}'>"
            for w, f in e["screenshots"].items()
        )
        cards.append(
            f"<figure><div class='shots'>{imgs}</div><figcaption><strong>{html.escape(e['name'])}</strong> "
            f"&mdash; score {e['score']:.3f}<br><small>{html.escape(lost)}</small></figcaption></figure>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>frontend-design-v0 gallery</title>"
        "<style>body{font-family:Georgia,serif;margin:2rem;background:#f4f1ea;color:#1d1a16}"
        "figure{margin:0 0 2.5rem}.shots{display:flex;gap:1rem;align-items:flex-start;flex-wrap:wrap}"
        "img{border:1px solid #ccc;max-height:420px}img.w1280{max-width:640px}</style></head><body>"
        "<h1>frontend-design-v0: graded pages</h1>" + "".join(cards) + "</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    import skillgym

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--briefs", type=int, default=4, help="test briefs whose expert pages to show")
    ns = parser.parse_args(argv)
    spec = skillgym.make_spec("frontend-design-v0")
    test = spec.tasks.tasks("test")
    step = max(1, len(test) // ns.briefs)  # spread over subjects, not one subject's variants
    entries = build_gallery(test[::step][: ns.briefs], ns.out, spec.sandbox)
    for e in entries:
        sys.stdout.write(f"{e['score']:.3f}  {e['name']}\n")
    sys.stdout.write(f"gallery: {ns.out / 'index.html'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
