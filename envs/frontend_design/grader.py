"""Grading a page by loading it in the sandbox's Chromium at 1280 and 375 px.

The answer is the page's path. Components (each in [0, 1]; weights in :data:`WEIGHTS`, summing
to 1; a page that does not exist or does not load scores 0 throughout):

- ``requirements``: share of the brief's elements (selector counts) and texts present;
- ``console``: no console errors or uncaught exceptions at either width;
- ``requests``: no failed and no external requests;
- ``not_blank``: the 1280 px screenshot is not one flat colour;
- ``no_overflow_375`` / ``no_overflow_1280``: no horizontal overflow at that width;
- ``contrast``: share of visible text elements meeting WCAG AA (1 where there is no text);
- ``brand_colour``: a colour within a small distance of the brand colour is used visibly;
- ``theme``: the page background is dark (relative luminance <= 0.2) or light (>= 0.5) as asked;
- ``weight``: the page and its local resources fit the budget;
- ``typography``: the font with most glyphs is not a generic default the skill warns against;
- ``compactness``: the answer is the path, not prose.
"""

from __future__ import annotations

from typing import Any

from skillgym.graders.compactness import compactness
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task

from .browser import FLAT_SHARE, ProbeError, probe
from .tasks import DESKTOP_WIDTH, MOBILE_WIDTH

WEIGHTS = {
    "requirements": 0.25,
    "console": 0.10,
    "requests": 0.10,
    "not_blank": 0.10,
    "no_overflow_375": 0.10,
    "no_overflow_1280": 0.05,
    "contrast": 0.10,
    "brand_colour": 0.05,
    "theme": 0.05,
    "weight": 0.03,
    "typography": 0.05,
    "compactness": 0.02,
}
# Families a browser falls back to or a template reaches for first (matched as name prefixes).
GENERIC_FONTS = (
    "dejavu",
    "liberation",
    "arial",
    "helvetica",
    "times",
    "inter",
    "roboto",
    "open sans",
    "lato",
    "noto sans",
    "noto serif",
    "nimbus sans",
    "courier",
)
BRAND_DISTANCE = 24  # RGB Euclidean distance that still counts as the brand colour (anti-aliasing, rounding)
DARK_MAX, LIGHT_MIN = 0.2, 0.5


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    if len(colour) == 3:
        colour = "".join(c * 2 for c in colour)
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def colour_distance(a: str, b: str) -> float:
    return sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b), strict=True)) ** 0.5


def is_generic_font(family: str) -> bool:
    name = family.lower()
    return any(name.startswith(g) for g in GENERIC_FONTS)


def answer_path(answer: str) -> str:
    """The page path from an answer: its first non-empty line, quotes and a ``file://`` stripped."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    line = line.strip("`'\" ")
    return line.removeprefix("file://")


def components_from_probe(result: dict[str, Any], reference: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """The browser components (all but compactness) and details, from a probe at 1280 and 375 px."""
    zero = {k: 0.0 for k in WEIGHTS if k != "compactness"}
    if result.get("error") or not result.get("renders"):
        return zero, {"error": result.get("error", "the page did not render")}
    pages = {p["width"]: p for p in result["renders"]}
    desktop, mobile = pages.get(DESKTOP_WIDTH), pages.get(MOBILE_WIDTH)
    if desktop is None or mobile is None or desktop.get("load_error") or mobile.get("load_error"):
        return zero, {"error": (desktop or mobile or {}).get("load_error", "the page did not load")}
    both = (desktop, mobile)
    counts = desktop.get("selector_counts", {})
    body = desktop.get("body_text", "").lower()
    missing = [r["label"] for r in reference.get("selectors", []) if counts.get(r["selector"], 0) < r["min"]]
    missing += [f'text "{t}"' for t in reference.get("texts", []) if t.lower() not in body]
    n_required = len(reference.get("selectors", [])) + len(reference.get("texts", []))
    checked = desktop.get("contrast_checked", 0)
    fails = desktop.get("contrast_failure_count", 0)
    brand = reference.get("brand")
    colours = desktop.get("colors", {})
    brand_hit = bool(brand) and any(colour_distance(c, brand) <= BRAND_DISTANCE for c in colours)
    lum = desktop.get("page_background_luminance", 1.0)
    theme = reference.get("theme")
    theme_ok = (lum <= DARK_MAX) if theme == "dark" else (lum >= LIGHT_MIN) if theme == "light" else True
    weight = max(p.get("page_weight_bytes", 0) for p in both)
    budget = int(reference.get("max_weight_kb", 0)) * 1000
    fonts = desktop.get("fonts", {})
    primary = next(iter(fonts), None)
    parts = {
        "requirements": 1.0 - len(missing) / n_required if n_required else 1.0,
        "console": float(all(p.get("console_error_count", 0) == 0 for p in both)),
        "requests": float(
            all(p.get("failed_request_count", 0) == 0 and p.get("external_request_count", 0) == 0 for p in both)
        ),
        "not_blank": float(desktop.get("screenshot", {}).get("nonzero_share", 0.0) >= FLAT_SHARE),
        "no_overflow_375": float(mobile.get("overflow_px", 0) == 0),
        "no_overflow_1280": float(desktop.get("overflow_px", 0) == 0),
        "contrast": 1.0 - fails / checked if checked else 1.0,
        "brand_colour": float(brand_hit) if brand else 1.0,
        "theme": float(theme_ok),
        "weight": float(weight <= budget) if budget else 1.0,
        "typography": float(primary is not None and not is_generic_font(primary)),
    }
    details = {
        "missing": missing,
        "fonts": fonts,
        "primary_font": primary,
        "page_weight_bytes": weight,
        "background_luminance": lum,
        "contrast_failures": desktop.get("contrast_failures", [])[:3],
        "console_errors": [e for p in both for e in p.get("console_errors", [])][:5],
        "failed_requests": [f for p in both for f in p.get("failed_requests", [])][:5],
        "overflow_px": {str(w): p.get("overflow_px", 0) for w, p in pages.items()},
    }
    return {k: round(v, 6) for k, v in parts.items()}, details


def score_of(parts: dict[str, float]) -> float:
    return round(sum(WEIGHTS[k] * parts.get(k, 0.0) for k in WEIGHTS), 6)


class DesignGrader:
    """Grades the submitted page path in the episode's sandbox (see the module docstring)."""

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        path = answer_path(answer)
        if sandbox is None or not path:
            reason = "no sandbox to load the page in" if sandbox is None else "the answer names no file"
            return Grade(score=0.0, components={k: 0.0 for k in WEIGHTS}, details={"error": reason})
        try:
            result = probe(
                sandbox,
                path,
                [DESKTOP_WIDTH, MOBILE_WIDTH],
                selectors=[r["selector"] for r in task.reference.get("selectors", [])],
                screenshot_dir=None,
                keep_text=True,
            )
        except ProbeError as exc:
            result = {"error": str(exc)}
        parts, details = components_from_probe(result, task.reference)
        if "error" in details:
            parts["compactness"] = 0.0
        else:
            parts["compactness"] = compactness(answer, messages, budget_chars=120)
        details["path"] = result.get("path", path)
        return Grade(score=score_of(parts), components=parts, details=details)
