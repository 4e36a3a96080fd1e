"""A bench roster: an orchestrator roster plus the baselines that swap who plays its subagents.

The file is an ordinary roster (``subagents``, ``orchestrator_prices``, ...) with one more key,
``baselines``: each names a policy per subagent (``"*"`` for every one) and, optionally, the
prices its model costs. Adding a newly distilled student is one more baseline entry::

    baselines:
      - name: large
        note: offline, the envs' scripted experts stand in for the large model
        policies: {"*": expert}
        prices: {input_per_million: 3.0, output_per_million: 15.0}
      - name: small-tuned/tiny
        policies: {codebase-explorer: "hf:runs/distill/student?max_new_tokens=96"}

``--baseline small-tuned`` selects every entry named ``small-tuned`` or ``small-tuned/...``.
A subagent a baseline gives no policy to keeps the roster's own; a suite whose right subagent
has no policy in a baseline is not run for it (the report says so). ``no-subagents`` is built
in: the orchestrator alone, with an empty roster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillgym.io import read_yaml_mapping, validation_message
from skillgym.orchestrator import Prices, Roster, RosterError, load_roster
from skillgym.policies.spec import parse_policy_spec

__all__ = ["BASELINE_KINDS", "NO_SUBAGENTS", "Baseline", "BenchRoster", "load_bench_roster"]

BASELINE_KINDS = ("large", "small-base", "small-tuned", "no-subagents")
NO_SUBAGENTS = "no-subagents"


class Baseline(BaseModel):
    """Who plays the subagents in one column of the comparison.

    Args:
        name: ``large``, ``small-base``, ``small-tuned`` (or any name), optionally with a
            ``/variant`` (``small-base/smollm2``).
        policies: Subagent name (or ``"*"``) -> policy spec.
        prices: Dollars per million tokens of this baseline's model (None: the roster's).
        note: A line the report prints under the table (e.g. what stands in for what).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")
    policies: dict[str, str] = Field(default_factory=dict)
    prices: Prices | None = None
    note: str = ""

    @property
    def kind(self) -> str:
        return self.name.partition("/")[0]

    def policy_for(self, subagent: str) -> str | None:
        return self.policies.get(subagent, self.policies.get("*"))

    def apply(self, roster: Roster) -> Roster:
        """The roster with this baseline's policies (and prices) on the subagents it names."""
        if self.name == NO_SUBAGENTS:
            return roster.model_copy(update={"subagents": []})
        entries = []
        for entry in roster.subagents:
            policy = self.policy_for(entry.name)
            if policy is None:
                entries.append(entry)
                continue
            update: dict[str, Any] = {"policy": str(parse_policy_spec(policy))}
            if self.prices is not None:
                update["prices"] = self.prices
            entries.append(entry.model_copy(update=update))
        return roster.model_copy(update={"subagents": entries})


class BenchRoster(BaseModel):
    """A roster and its baselines (see the module docstring)."""

    roster: Roster
    baselines: list[Baseline] = Field(default_factory=list)

    def select(self, kinds: list[str] | None) -> list[Baseline]:
        """The baselines ``--baseline`` names (all the file's when ``kinds`` is empty).

        Raises:
            ValueError: a name matches nothing in the file.
        """
        if not kinds:
            return list(self.baselines)
        chosen: list[Baseline] = []
        for kind in kinds:
            if kind == NO_SUBAGENTS:
                chosen.append(Baseline(name=NO_SUBAGENTS, note="the orchestrator alone: no subagents"))
                continue
            found = [b for b in self.baselines if b.name == kind or b.kind == kind]
            if not found:
                names = ", ".join(b.name for b in self.baselines) or "none"
                raise ValueError(f"--baseline {kind!r}: the roster has no such baseline (it has: {names})")
            chosen += [b for b in found if b not in chosen]
        return chosen


def load_bench_roster(source: str | Path | dict[str, Any]) -> BenchRoster:
    """A bench roster from a YAML file or its data.

    Raises:
        RosterError: naming the file and the field that is wrong.
    """
    where = "bench roster"
    if isinstance(source, (str, Path)):
        where = str(Path(source).expanduser())
        source = read_yaml_mapping(source, RosterError, "roster")
    if not isinstance(source, dict):
        raise RosterError(f"{where}: expected a mapping with 'subagents' and 'baselines'")
    data = dict(source)
    raw = data.pop("baselines", []) or []
    roster = load_roster(data)
    try:
        baselines = [Baseline.model_validate(b) for b in raw]
    except ValidationError as exc:
        raise RosterError(f"{where}: baselines: {validation_message(exc)}") from None
    for baseline in baselines:
        unknown = sorted(set(baseline.policies) - {"*", *roster.names})
        if unknown:
            raise RosterError(
                f"{where}: baseline {baseline.name!r} names {', '.join(unknown)}, not in the roster "
                f"({', '.join(roster.names)})"
            )
        for name, spec in baseline.policies.items():
            try:
                parse_policy_spec(spec)
            except ValueError as exc:
                raise RosterError(f"{where}: baseline {baseline.name!r}, {name}: {exc}") from None
    names = [b.name for b in baselines]
    if len(set(names)) != len(names):
        raise RosterError(f"{where}: baseline names must be unique (got {names})")
    return BenchRoster(roster=roster, baselines=baselines)
