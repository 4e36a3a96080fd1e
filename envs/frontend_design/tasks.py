"""Design briefs: a hand-written seed of subjects, grown into light and dark themes and several brand colours.

A brief is one page for one subject (a kayak rental's landing page, a clinic's sign-up form,
...) with constraints a program can check: elements that must be present (CSS selectors with
a minimum count), texts that must appear, a brand colour, the theme, a page-weight budget, and
always: responsive at 375 px and no external requests. The split is seeded and by subject, so
that no test subject is seen in training under the other theme.
"""

from __future__ import annotations

import hashlib
from typing import Any

from skillgym.tasks import TaskList
from skillgym.types import Task

TEST_FRACTION = 0.25

# What every page of a kind must hold: (selector, minimum count, how the brief says it).
KINDS: dict[str, list[tuple[str, int, str]]] = {
    "landing": [
        ("nav a", 3, "a navigation bar with at least 3 links"),
        ("h1", 1, "one main heading (h1)"),
        ("section", 3, "at least 3 content sections (section elements)"),
        ("footer", 1, "a footer"),
    ],
    "dashboard": [
        ("h1", 1, "a heading (h1) naming the dashboard"),
        ("table", 1, "a data table"),
        ("tbody tr", 5, "at least 5 table rows"),
        ("nav a, aside a", 3, "navigation with at least 3 links (nav or aside)"),
    ],
    "portfolio": [
        ("h1", 1, "a heading (h1) with the person's name"),
        ("article", 4, "at least 4 projects, each an article"),
        ("a[href^='mailto:']", 1, "a mailto: contact link"),
    ],
    "pricing": [
        ("h1", 1, "a main heading (h1)"),
        ("article", 3, "at least 3 plans, each an article"),
        ("article li", 9, "at least 3 listed features per plan (li inside the articles)"),
        ("a, button", 3, "a call to action per plan (a link or button)"),
    ],
    "docs": [
        ("nav a", 5, "a side or top navigation with at least 5 links"),
        ("h1", 1, "a page title (h1)"),
        ("h2", 3, "at least 3 sections with h2 headings"),
        ("pre code", 1, "at least one code sample in pre > code"),
    ],
    "form": [
        ("form", 1, "a form"),
        ("label", 3, "at least 3 labelled fields (label elements)"),
        ("input[type='email']", 1, "an email input (input type=email)"),
        ("button[type='submit'], input[type='submit']", 1, "a submit button"),
    ],
    "error": [("h1", 1, "a heading (h1)"), ("a[href]", 1, "a link back to the home page")],
    "product": [
        ("h1", 1, "the product name as h1"),
        ("button", 1, "an add-to-cart button"),
        ("ul li", 3, "a list of at least 3 product details (ul li)"),
        ("svg, img", 1, "a product image (an inline svg or an img with a data: URI)"),
    ],
    "event": [
        ("h1", 1, "the event name as h1"),
        ("ol li, ul li", 4, "a schedule of at least 4 items (list items)"),
        ("form, a[href^='mailto:']", 1, "a way to register (a form or a mailto: link)"),
    ],
    "menu": [
        ("h1", 1, "the restaurant's name as h1"),
        ("section", 2, "at least 2 menu sections (section elements)"),
        ("li", 8, "at least 8 dishes (list items)"),
    ],
}

# (id, kind, subject, brand colour, texts that must appear, page-weight budget in kB)
SEED: list[tuple[str, str, str, str, list[str], int]] = [
    (
        "tidewater",
        "landing",
        "Tidewater, a kayak rental shop on a tidal river",
        "#0e7c86",
        ["Tidewater", "Book a kayak"],
        80,
    ),
    ("loam", "landing", "Loam, a soil-testing kit for home gardeners", "#7a4b24", ["Loam", "Order a kit"], 80),
    (
        "quillstack",
        "landing",
        "Quillstack, a note-taking app for historians",
        "#5b3fd1",
        ["Quillstack", "Start writing"],
        80,
    ),
    ("ferrous", "landing", "Ferrous, a blacksmithing school", "#b3411d", ["Ferrous", "Enrol"], 80),
    ("nightjar", "landing", "Nightjar, a late-night radio station", "#d4a017", ["Nightjar", "Listen live"], 80),
    ("glasshouse", "landing", "Glasshouse, a botanical cafe", "#2f7d32", ["Glasshouse", "Reserve a table"], 80),
    ("orbitlab", "dashboard", "OrbitLab, a satellite telemetry dashboard", "#1f6feb", ["Telemetry", "Battery"], 120),
    ("harvest", "dashboard", "Harvest Co-op's weekly sales dashboard", "#c2410c", ["Revenue", "Orders"], 120),
    ("pulseward", "dashboard", "Pulseward, a hospital bed-occupancy dashboard", "#be123c", ["Occupancy", "Ward"], 120),
    ("ledgerly", "dashboard", "Ledgerly, an invoice tracker for freelancers", "#0f766e", ["Invoices", "Overdue"], 120),
    (
        "mira-okafor",
        "portfolio",
        "Mira Okafor, an industrial designer",
        "#e11d48",
        ["Mira Okafor", "Selected work"],
        100,
    ),
    ("tomas-lind", "portfolio", "Tomas Lind, a documentary photographer", "#334155", ["Tomas Lind", "Contact"], 100),
    (
        "studio-vela",
        "portfolio",
        "Studio Vela, a two-person type foundry",
        "#9333ea",
        ["Studio Vela", "Typefaces"],
        100,
    ),
    ("ren-hart", "portfolio", "Ren Hart, a game sound designer", "#0891b2", ["Ren Hart", "Credits"], 100),
    (
        "cloudnest",
        "pricing",
        "CloudNest, a backup service for small offices",
        "#2563eb",
        ["Starter", "Team", "Business"],
        80,
    ),
    ("inkwell", "pricing", "Inkwell, a newsletter platform", "#a21caf", ["Free", "Writer", "Publisher"], 80),
    ("tutorly", "pricing", "Tutorly, online maths tutoring", "#ea580c", ["Monthly", "Termly", "Yearly"], 80),
    (
        "greenmile",
        "pricing",
        "Greenmile, an electric-van delivery service",
        "#15803d",
        ["Local", "Regional", "National"],
        80,
    ),
    ("rivet-cli", "docs", "the Rivet CLI's installation guide", "#f97316", ["Installation", "rivet init"], 100),
    ("kestrel-api", "docs", "the Kestrel REST API's authentication page", "#4f46e5", ["Authentication", "Bearer"], 100),
    (
        "sprocket",
        "docs",
        "Sprocket, a Python task-queue library: quick start",
        "#059669",
        ["Quick start", "pip install sprocket"],
        100,
    ),
    ("meadow-sdk", "docs", "the Meadow mobile SDK's changelog", "#db2777", ["Changelog", "Breaking changes"], 100),
    ("clinic-signup", "form", "a dental clinic's new-patient sign-up", "#0284c7", ["New patient", "Date of birth"], 60),
    ("guild-join", "form", "a woodworkers' guild membership application", "#854d0e", ["Membership", "Experience"], 60),
    ("beta-waitlist", "form", "a waitlist for a robot-vacuum beta", "#7c3aed", ["Waitlist", "Join"], 60),
    ("volunteer", "form", "a beach clean-up volunteer form", "#0d9488", ["Volunteer", "Availability"], 60),
    ("lost-404", "error", "a 404 page for a hiking-trail website", "#65a30d", ["404", "Back to the trails"], 40),
    ("maint-503", "error", "a maintenance page for an online bank", "#1e40af", ["maintenance", "Back soon"], 40),
    ("oops-500", "error", "a 500 error page for a recipe site", "#dc2626", ["500", "Something burned"], 40),
    ("offline", "error", "an offline page for a transit app", "#ca8a04", ["offline", "Try again"], 40),
    (
        "aero-kettle",
        "product",
        "the Aero kettle, a gooseneck electric kettle",
        "#b45309",
        ["Aero kettle", "Add to cart"],
        80,
    ),
    ("trail-pack", "product", "the Switchback 28 L trail backpack", "#166534", ["Switchback", "Add to cart"], 80),
    ("lumen-lamp", "product", "the Lumen desk lamp", "#f59e0b", ["Lumen", "Add to cart"], 80),
    ("synth-one", "product", "the Mono-1 pocket synthesizer", "#e11d48", ["Mono-1", "Add to cart"], 80),
    ("pycon-north", "event", "PyNorth, a regional Python conference", "#2563eb", ["PyNorth", "Schedule"], 80),
    ("night-market", "event", "a lantern night market", "#c2410c", ["Night market", "Register"], 80),
    ("jazz-fest", "event", "Riverside Jazz Weekend", "#6d28d9", ["Riverside Jazz", "Line-up"], 80),
    ("osteria", "menu", "Osteria Fumo, a wood-fired trattoria", "#9a3412", ["Osteria Fumo", "Antipasti"], 60),
    ("noodle-bar", "menu", "Slurp, a ramen bar", "#be123c", ["Slurp", "Broths"], 60),
    ("green-bowl", "menu", "Green Bowl, a salad counter", "#15803d", ["Green Bowl", "Bowls"], 60),
]
THEMES = ("light", "dark")
# Brand colours the seed is grown with: each subject also gets BRAND_VARIANTS of these (picked by
# a hash of its id), so one subject is asked for in several palettes as well as both themes.
BRAND_POOL = (
    "#d9480f",
    "#0b7285",
    "#5f3dc4",
    "#2b8a3e",
    "#c2255c",
    "#e67700",
    "#1864ab",
    "#862e9c",
    "#087f5b",
    "#a61e4d",
    "#364fc7",
    "#5c940d",
)
BRAND_VARIANTS = 3
MOBILE_WIDTH = 375
DESKTOP_WIDTH = 1280


def brief_text(kind: str, subject: str, brand: str, theme: str, texts: list[str], weight_kb: int) -> str:
    required = [label for _, _, label in KINDS[kind]]
    lines = [
        f"Design a {kind} page for {subject}.",
        "Write it as one self-contained HTML file in /workspace (inline CSS and any script; no external "
        "fonts, images, scripts or stylesheets: the page must make no network requests).",
        "Constraints:",
        *(f"- {r}" for r in required),
        "- these texts, visibly: " + ", ".join(f'"{t}"' for t in texts),
        f"- the brand colour {brand}, used visibly",
        f"- a {theme} theme",
        f"- works at {MOBILE_WIDTH} px wide (no horizontal scrolling) and at {DESKTOP_WIDTH} px",
        "- no console errors; all text meets WCAG AA contrast",
        f"- at most {weight_kb} kB in total",
        "When it is done, call submit with the path of the HTML file.",
    ]
    return "\n".join(lines)


def _in_test(subject_id: str, seed: int, fraction: float) -> bool:
    # A hash, not a shuffle: a subject's split never depends on the others.
    digest = hashlib.sha256(f"frontend-design:{seed}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _brands(subject_id: str, brand: str, variants: int) -> list[str]:
    pool = [c for c in BRAND_POOL if c != brand]
    start = int(hashlib.sha256(subject_id.encode()).hexdigest()[:8], 16) % len(pool)
    return [brand] + [pool[(start + 5 * i) % len(pool)] for i in range(variants)]


def brief_rows(brand_variants: int = BRAND_VARIANTS) -> list[dict[str, Any]]:
    """Every brief as a plain row: each seed subject in both themes, with its own brand colour
    and ``brand_variants`` more (ids ``<subject>-<theme>`` and ``<subject>-<theme>-b<k>``)."""
    rows = []
    for sid, kind, subject, seed_brand, texts, weight in SEED:
        for k, brand in enumerate(_brands(sid, seed_brand, brand_variants)):
            for theme in THEMES:
                rows.append(
                    {
                        "id": f"{sid}-{theme}" + (f"-b{k}" if k else ""),
                        "subject_id": sid,
                        "kind": kind,
                        "subject": subject,
                        "brand": brand,
                        "theme": theme,
                        "texts": list(texts),
                        "max_weight_kb": weight,
                        "selectors": [{"selector": s, "min": n, "label": label} for s, n, label in KINDS[kind]],
                    }
                )
    return rows


class DesignBriefs(TaskList):
    """The design briefs as tasks: prompt = the brief; reference = what the grader checks.

    Args:
        seed: Picks the train/test split (by subject).
        test_fraction: Share of subjects held out in ``test``.
        brand_variants: Extra brand colours per subject (0: the seed's 80 briefs only).
    """

    def __init__(
        self, seed: int = 0, test_fraction: float = TEST_FRACTION, brand_variants: int = BRAND_VARIANTS
    ) -> None:
        tasks = []
        for row in brief_rows(brand_variants):
            split = "test" if _in_test(row["subject_id"], seed, test_fraction) else "train"
            tasks.append(
                Task(
                    id=row["id"],
                    prompt=brief_text(
                        row["kind"], row["subject"], row["brand"], row["theme"], row["texts"], row["max_weight_kb"]
                    ),
                    reference={
                        k: row[k] for k in ("kind", "subject", "brand", "theme", "texts", "max_weight_kb", "selectors")
                    },
                    metadata={"kind": row["kind"], "theme": row["theme"], "subject_id": row["subject_id"]},
                    split=split,
                )
            )
        super().__init__(tasks, name="frontend-design briefs", splits=("train", "test"))

    def counts(self) -> dict[str, int]:
        return {s: len(self.tasks(s)) for s in ("train", "test")}
