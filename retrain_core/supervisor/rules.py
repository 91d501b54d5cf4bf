"""`[[campaign.rules]]` applied by the supervisor: each rule's `when` (retrain_core.expr) is
evaluated on every running run's latest metrics row; a rule fires at most once per run
attempt. What fired is recorded in state.json (`runs.<name>.rules_fired`) and in the run's
history (`runs/<name>/events.jsonl`); the caller carries out the action."""

from __future__ import annotations

from dataclasses import dataclass

from retrain_core.expr import ExprError, evaluate, parse


@dataclass(frozen=True)
class Rule:
    index: int
    name: str
    when: str
    action: str
    tree: tuple

    @property
    def label(self) -> str:
        return f"rule {self.index + 1}" + (f" ({self.name})" if self.name else "")


def load_rules(raw: list, log) -> list[Rule]:
    """Rules of the manifest; one that does not parse (validated at load, so only a
    hand-edited manifest) is logged and skipped rather than stopping the supervisor."""
    rules = []
    for i, r in enumerate(raw or []):
        try:
            rules.append(Rule(i, str(r.get("name", "")), r["when"], r["action"], parse(r["when"])))
        except (ExprError, KeyError, TypeError, AttributeError) as exc:
            log(f"rule {i + 1} ignored: {exc}")
    return rules


def rules_to_fire(rules: list[Rule], row: dict, rstate: dict) -> list[Rule]:
    """Rules whose condition holds on `row` and that have not fired in this attempt."""
    attempt = rstate.get("attempt", 0)
    fired = {f["rule"] for f in rstate.get("rules_fired", []) if f.get("attempt") == attempt}
    return [r for r in rules if r.index not in fired and evaluate(r.tree, row) is True]


def record_firing(rule: Rule, rstate: dict, row: dict, now: float) -> dict:
    entry = {"rule": rule.index, "name": rule.name, "when": rule.when, "action": rule.action,
             "step": row.get("step"), "attempt": rstate.get("attempt", 0), "at": now}
    rstate.setdefault("rules_fired", []).append(entry)
    return entry
