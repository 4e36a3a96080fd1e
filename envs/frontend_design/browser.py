"""Running the browser probe in a sandbox, and the ``render_page`` tool built on it.

:mod:`.probe` is sent as the stdin of ``python3 -`` through the sandbox's ``run`` op, so it
runs as the sandbox user, in the sandbox's Chromium, with the sandbox's (absent) network:
the grader sees the page exactly as the tool showed it to the policy.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from pathlib import Path
from typing import Any

from pydantic import Field

from skillgym.sandbox.base import Sandbox
from skillgym.sandbox.ops import OpError
from skillgym.tools.base import Tool, ToolArgs
from skillgym.types import ImagePart, ToolOutput

PROBE_SOURCE = Path(__file__).with_name("probe.py").read_text(encoding="utf-8")
SCREENSHOT_DIR = "/workspace/.render"
_EOF = "SKILLGYM_PROBE_EOF"


class ProbeError(RuntimeError):
    """The probe did not run, or printed no result."""


def probe(
    sandbox: Sandbox,
    path: str,
    widths: list[int],
    *,
    selectors: list[str] | None = None,
    screenshot_dir: str | None = SCREENSHOT_DIR,
    keep_text: bool = False,
    inline_png: bool = False,
    inline_max_bytes: int = 1_000_000,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Load ``path`` in the sandbox's Chromium at each width and measure it.

    Args:
        sandbox: A started sandbox whose image has Chromium (``skillgym/frontend``).
        path: The page, relative to /workspace or absolute.
        widths: Viewport widths in CSS pixels, rendered in order in one browser.
        selectors: CSS selectors whose match counts to report (``selector_counts``).
        screenshot_dir: Where PNG screenshots go inside the sandbox; None: none are kept.
        keep_text: Include the page's visible text (``body_text``, 20,000 characters at most).
        inline_png: Include each screenshot as base64 (``screenshot.png_base64``) for the host,
            when it is at most ``inline_max_bytes`` (else ``screenshot.inline_skipped`` says why).
        inline_max_bytes: The largest screenshot sent back inline.
        timeout: Seconds for the whole probe.

    Returns:
        The probe's JSON: ``path``, ``file_bytes``, ``renders`` (one per width) or ``error``.
    """
    options = {
        "path": path,
        "widths": widths,
        "selectors": selectors or [],
        "screenshot_dir": screenshot_dir,
        "keep_text": keep_text,
        "inline_png": inline_png,
        "inline_max_bytes": inline_max_bytes,
        "timeout": max(5.0, timeout - 5),
    }
    cmd = f"python3 - {shlex.quote(json.dumps(options))} <<'{_EOF}'\n{PROBE_SOURCE}\n{_EOF}\n"
    res = sandbox.call("run", cmd=cmd, timeout=timeout, max_output=2_000_000)
    lines = [line for line in res["stdout"].splitlines() if line.startswith("{")]
    if res["timed_out"] or not lines:
        tail = (res["stderr"] or res["stdout"]).strip()[-800:]
        raise ProbeError(
            f"the browser probe {'timed out' if res['timed_out'] else 'printed no result'} "
            f"(exit code {res['exit_code']}): {tail}"
        )
    return json.loads(lines[-1])


def format_report(result: dict[str, Any]) -> str:
    """The text report ``render_page`` shows a text-only policy."""
    if result.get("error") and not result.get("renders"):
        return f"Could not render {result.get('path')}: {result['error']}"
    lines = [f"Rendered {result['path']} ({result.get('file_bytes', 0):,} bytes of HTML)."]
    for page in result.get("renders", []):
        width = page["width"]
        if page.get("load_error"):
            lines.append(f"[{width}px] did not load: {page['load_error']}")
            continue
        shot = page.get("screenshot", {})
        lines.append(
            f"[{width}px] title {page.get('title')!r}; page height {page.get('page_height')}px; "
            f"loaded in {page.get('load_ms')} ms; screenshot {shot.get('path', '(not kept)')}"
        )
        if shot.get("nonzero_share", 1) < FLAT_SHARE:
            lines.append("  SCREENSHOT IS BLANK: the page shows a single flat colour")
        errors = page.get("console_errors", [])
        lines.append(
            f"  console errors: {page.get('console_error_count', 0)}" + "".join(f"\n    - {e}" for e in errors[:5])
        )
        failed = page.get("failed_requests", [])
        lines.append(
            f"  failed requests: {page.get('failed_request_count', 0)}"
            + "".join(f"\n    - {f['url']} ({f['error']})" for f in failed[:5])
        )
        if page.get("external_request_count"):
            lines.append(
                f"  external requests (the sandbox has no network; inline everything): "
                f"{', '.join(page['external_requests'][:5])}"
            )
        lines.append(f"  page weight: {page.get('page_weight_bytes', 0):,} bytes in {page.get('requests', 0)} requests")
        if page.get("overflow_px"):
            wide = ", ".join(f"{w['tag']} (right edge {w['right']}px)" for w in page.get("wide_elements", []))
            lines.append(
                f"  HORIZONTAL OVERFLOW: content is {page['scroll_width']}px wide in a {width}px viewport"
                + (f"; widest: {wide}" if wide else "")
            )
        else:
            lines.append("  horizontal overflow: none")
        fonts = page.get("fonts", {})
        lines.append(
            "  fonts used (glyphs): " + (", ".join(f"{k} ({v})" for k, v in list(fonts.items())[:6]) or "none")
        )
        fails = page.get("contrast_failures", [])
        lines.append(
            f"  text contrast failures (WCAG AA): {page.get('contrast_failure_count', 0)} "
            f"of {page.get('contrast_checked', 0)} text elements"
            + "".join(
                f"\n    - {f['text']!r}: {f['ratio']}:1 ({f['color']} on {f['background']}), needs {f['need']}:1"
                for f in fails[:5]
            )
        )
        lines.append(
            f"  background {page.get('page_background')}; top colours: "
            + ", ".join(k for k, _ in sorted(page.get("colors", {}).items(), key=lambda kv: -kv[1])[:6])
        )
    return "\n".join(lines)


# Below this share of non-zero filtered PNG bytes a screenshot is one flat colour. Measured at
# 1280 px: a blank page 1e-6, the single word "hi" in 10 px type 2.7e-5, one line of body text
# 4.4e-4, a full-page gradient 0.35.
FLAT_SHARE = 0.00001


class RenderPageArgs(ToolArgs):
    path: str = Field(description="The HTML file to render, relative to /workspace or absolute under it.")
    width: int = Field(
        default=1280, ge=320, le=2560, description="Viewport width in CSS pixels (e.g. 375 for a phone)."
    )


def screenshots(result: dict[str, Any]) -> list[ImagePart]:
    """The screenshots a probe sent back inline, as image parts (one per width that has one)."""
    parts = []
    for page in result.get("renders", []):
        shot = page.get("screenshot", {})
        if not shot.get("png_base64"):
            continue
        try:
            raw = base64.b64decode(shot["png_base64"], validate=True)
        except (binascii.Error, ValueError):
            continue
        parts.append(
            ImagePart.from_bytes(
                raw, "image/png", path=shot.get("path"), width=shot.get("width"), height=shot.get("height")
            )
        )
    return parts


class RenderPage(Tool):
    """``render_page``: the page as a real browser shows it: a text report for every policy and
    the screenshot as an image part for multimodal ones (also saved under /workspace/.render/).

    Args:
        images: Send the screenshot back as an image part (off: the text report alone, and a
            probe that does not ship the PNG to the host).
    """

    name = "render_page"
    description = (
        "Open an HTML file in headless Chromium at the given viewport width and report what the browser saw: "
        "console errors, failed and external requests, page weight, horizontal overflow, the fonts actually "
        "used, the worst text-contrast failures and the main colours. A PNG screenshot is saved under "
        "/workspace/.render/ (and shown to models that take images)."
    )
    Args = RenderPageArgs

    def __init__(self, images: bool = True) -> None:
        self.images = images

    def __call__(self, sandbox: Sandbox, args: RenderPageArgs) -> ToolOutput:
        if sandbox is None:
            raise OpError("render_page needs the sandbox; none is running")
        if not args.path.strip():
            raise OpError("the path is empty; give the HTML file you wrote, e.g. index.html")
        try:
            result = probe(sandbox, args.path.strip(), [args.width], inline_png=self.images)
        except ProbeError as exc:
            raise OpError(str(exc)) from None
        return ToolOutput(text=format_report(result), images=screenshots(result) if self.images else [])
