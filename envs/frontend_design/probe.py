"""The browser probe: loads a page in headless Chromium and measures it. Runs INSIDE the sandbox.

This file is sent to the sandbox as the stdin of ``python3 -`` (see :mod:`.browser`), so it
uses the standard library only and imports nothing from skillgym. It talks to Chromium over
the DevTools protocol on a pipe (``--remote-debugging-pipe``: fds 3 and 4, NUL-framed JSON),
which needs no port and no extra package. For each width it navigates, waits for load and
fonts, then records console errors, requests (failed, external), page weight, horizontal
overflow, text contrast, the fonts Chromium actually rendered with, colours, and the answers
to the caller's selector and text queries; it saves a PNG screenshot and judges whether it is
flat (one colour). The result is one JSON object on stdout.
"""

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from urllib.parse import unquote, urlparse

METRICS_JS = r"""
(() => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const blend = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const hex = (c) => '#' + c.slice(0, 3).map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
  // The effective background behind an element: the first opaque background going up,
  // blended with the translucent ones on the way; null when an image or gradient is in the way.
  const background = (el) => {
    const layers = [];
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.backgroundImage && s.backgroundImage !== 'none') return null;
      const c = parse(s.backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let base = [255, 255, 255, 1];
    if (layers.length && layers[layers.length - 1][3] >= 1) base = layers.pop();
    for (let i = layers.length - 1; i >= 0; i--) base = blend(layers[i], base);
    return base;
  };
  const vw = window.innerWidth;
  const de = document.documentElement;
  const body = document.body;
  const scrollWidth = Math.max(de.scrollWidth, body ? body.scrollWidth : 0);
  const wide = [];
  const colors = {};
  const failures = [];
  let textChars = 0, checked = 0;
  for (const el of document.querySelectorAll('body *')) {
    const s = getComputedStyle(el);
    if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    for (const prop of ['color', 'backgroundColor', 'borderTopColor']) {
      const c = parse(s[prop]);
      if (c && c[3] > 0.5 && (prop !== 'borderTopColor' || parseFloat(s.borderTopWidth) > 0)) {
        const h = hex(c); colors[h] = (colors[h] || 0) + 1;
      }
    }
    if (r.right > vw + 1 && wide.length < 5 && s.position !== 'fixed') {
      wide.push({tag: el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' ? '.' + el.className.split(/\s+/)[0] : ''), right: Math.round(r.right)});
    }
    let own = '';
    for (const n of el.childNodes) if (n.nodeType === 3) own += n.textContent;
    own = own.trim();
    if (!own) continue;
    textChars += own.length;
    const bg = background(el);
    const fg = parse(s.color);
    if (!bg || !fg) continue;
    checked += 1;
    const text = fg[3] < 1 ? blend(fg, bg) : fg;
    const l1 = lum(text), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(s.fontSize), weight = parseInt(s.fontWeight, 10) || 400;
    const need = (size >= 24 || (size >= 18.66 && weight >= 700)) ? 3 : 4.5;
    if (ratio < need) {
      failures.push({text: own.slice(0, 48), ratio: Math.round(ratio * 100) / 100, need, color: hex(text), background: hex(bg), chars: own.length});
    }
  }
  failures.sort((a, b) => a.ratio / a.need - b.ratio / b.need);
  const pageBg = background(body || de) || [255, 255, 255, 1];
  return JSON.stringify({
    title: document.title,
    viewport_width: vw,
    scroll_width: scrollWidth,
    overflow_px: Math.max(0, scrollWidth - vw),
    wide_elements: wide,
    page_height: Math.max(de.scrollHeight, body ? body.scrollHeight : 0),
    text_chars: textChars,
    contrast_checked: checked,
    contrast_failures: failures.slice(0, 8),
    contrast_failure_count: failures.length,
    colors: colors,
    page_background: hex(pageBg),
    page_background_luminance: Math.round(lum(pageBg) * 1000) / 1000,
    has_viewport_meta: !!document.querySelector('meta[name="viewport"]'),
    body_text: body ? body.innerText.slice(0, 20000) : '',
  });
})()
"""

FONT_SELECTOR = "h1, h2, h3, h4, p, a, button, li, label, td, th, span, blockquote, input"


class Browser:
    """One headless Chromium on the DevTools pipe."""

    def __init__(self, timeout):
        self.deadline = time.monotonic() + timeout
        exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if exe is None:
            raise RuntimeError("no chromium in this sandbox (the frontend image skillgym/frontend has it)")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def fds():  # the child's fds 3 and 4 are the protocol pipes
            # Copies first: a pipe may already sit at fd 3 or 4, and dup2 onto itself would
            # leave it close-on-exec.
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        argv = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            "--user-data-dir=" + self.profile,
            "--font-render-hinting=none",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, until):
        while b"\0" not in self.buffer:
            left = min(until, self.deadline) - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, browser=False):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message(self.deadline)
            if reply is None:
                raise TimeoutError(f"no answer to {method} before the deadline")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method, seconds):
        until = time.monotonic() + seconds
        if any(event["method"] == method for event in self.events):
            return True
        while True:
            event = self._read_message(until)
            if event is None:
                return False
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return True

    def drain(self, seconds):
        until = time.monotonic() + seconds
        while True:
            event = self._read_message(until)
            if event is None:
                return
            if "method" in event:
                self.events.append(event)


def remote_text(obj):
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("type", ""))


def png_flatness(data):
    """(width, height, share of non-zero bytes in the filtered scanlines). A single flat colour
    filters to (almost) nothing but zeros, whatever filter the encoder chose; text and shapes
    do not. Decoding the pixels would be exact but takes seconds in pure Python."""
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    nonzero = len(raw) - raw.count(0) - height  # each row's filter byte is not content
    return width, height, max(0, nonzero) / max(1, len(raw))


def file_size(url):
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return 0
    try:
        return os.path.getsize(unquote(parsed.path))
    except OSError:
        return 0


def measure(browser, url, width, options):
    height = 812 if width < 600 else 900
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.events = []
    started = time.monotonic()
    nav = browser.send("Page.navigate", {"url": url})
    if nav.get("errorText"):
        return {"width": width, "load_error": nav["errorText"]}
    loaded = browser.wait_for("Page.loadEventFired", options.get("load_timeout", 10))
    browser.send("Runtime.evaluate", {"expression": "document.fonts.ready.then(() => 1)", "awaitPromise": True})
    browser.drain(options.get("settle", 0.25))
    load_ms = round((time.monotonic() - started) * 1000)
    result = browser.send("Runtime.evaluate", {"expression": METRICS_JS, "returnByValue": True})
    if "exceptionDetails" in result:
        return {
            "width": width,
            "load_error": "the measuring script failed: " + str(result["exceptionDetails"].get("text")),
        }
    page = json.loads(result["result"]["value"])
    console, requests, failed, sizes = [], {}, [], {}
    for event in browser.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            console.append(" ".join(remote_text(a) for a in params.get("args", []))[:300])
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = remote_text(details.get("exception", {})) if details.get("exception") else details.get("text", "")
            console.append(("Uncaught " + text)[:300])
        elif method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            failed.append({"url": requests.get(params["requestId"], "?")[:200], "error": params.get("errorText", "")})
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("status", 200) >= 400:
                failed.append({"url": response.get("url", "")[:200], "error": f"HTTP {response['status']}"})
            if response.get("url", "").startswith("file:"):
                sizes[response["url"]] = file_size(response["url"])
    urls = list(dict.fromkeys(requests.values()))
    external = [u[:200] for u in urls if urlparse(u).scheme not in ("file", "data", "blob", "about", "")]
    page.update(
        {
            "width": width,
            "loaded": loaded,
            "load_ms": load_ms,
            "console_errors": console[:10],
            "console_error_count": len(console),
            "failed_requests": failed[:10],
            "failed_request_count": len(failed),
            "requests": len(urls),
            "external_requests": external[:10],
            "external_request_count": len(external),
            "page_weight_bytes": sum(sizes.values()) or file_size(url),
        }
    )
    fonts = {}
    try:
        root = browser.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        nodes = browser.send("DOM.querySelectorAll", {"nodeId": root, "selector": FONT_SELECTOR})["nodeIds"]
        for node in nodes[:60]:
            for font in browser.send("CSS.getPlatformFontsForNode", {"nodeId": node}).get("fonts", []):
                fonts[font["familyName"]] = fonts.get(font["familyName"], 0) + font.get("glyphCount", 0)
    except (RuntimeError, KeyError):
        pass
    page["fonts"] = dict(sorted(fonts.items(), key=lambda kv: -kv[1]))
    queries = {}
    for selector in options.get("selectors", []):
        expr = (
            f"(() => {{ try {{ return document.querySelectorAll({json.dumps(selector)}).length; }} "
            f"catch (e) {{ return -1; }} }})()"
        )
        queries[selector] = (
            browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
            .get("result", {})
            .get("value", -1)
        )
    page["selector_counts"] = queries
    shot = browser.send("Page.captureScreenshot", {"format": "png"})
    data = base64.b64decode(shot["data"])
    w, h, nonzero = png_flatness(data)
    page["screenshot"] = {"width": w, "height": h, "bytes": len(data), "nonzero_share": round(nonzero, 6)}
    if options.get("inline_png"):
        # Bounded: the probe's whole answer must fit the sandbox's output limit.
        if len(data) <= options.get("inline_max_bytes", 1_000_000):
            page["screenshot"]["png_base64"] = shot["data"]
        else:
            page["screenshot"]["inline_skipped"] = f"{len(data)} bytes is over the inline limit"
    folder = options.get("screenshot_dir")
    if folder:
        os.makedirs(folder, exist_ok=True)
        name = os.path.splitext(os.path.basename(urlparse(url).path))[0] or "page"
        path = os.path.join(folder, f"{name}-{width}.png")
        with open(path, "wb") as fh:
            fh.write(data)
        page["screenshot"]["path"] = path
    if not options.get("keep_text"):
        page.pop("body_text", None)
    return page


def main():
    options = json.loads(sys.argv[1])
    path = options["path"]
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    path = os.path.normpath(path)
    out = {"path": path}
    if not os.path.isfile(path):
        out["error"] = f"no file at {path}"
        print(json.dumps(out))
        return
    with open(path, "rb") as fh:
        head = fh.read(2_000_000)
    out["file_bytes"] = os.path.getsize(path)
    out["parses"] = b"<" in head and head.strip() != b""
    browser = Browser(options.get("timeout", 40))
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        browser.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "DOM", "CSS"):
            browser.send(domain + ".enable")
        url = "file://" + path
        out["renders"] = [measure(browser, url, int(w), options) for w in options.get("widths", [1280])]
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        browser.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
