"""A small, safe expression language for campaign rules (`when = "step >= 50 and
correct_rate < 0.05"`). No `eval`: a tokenizer and a recursive-descent parser build a tree
of tuples that `evaluate` walks.

    expr := or;  or := and ("or" and)*;  and := not ("and" not)*;  not := "not" not | cmp
    cmp  := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum  := prod (("+" | "-") prod)*;  prod := unary (("*" | "/") unary)*
    unary := "-" unary | NUMBER | NAME | "true" | "false" | "(" expr ")"

Names are fields of the run's latest metrics row (`step` is that row's 0-based step) plus
`elapsed_s` (seconds since the run's attempt started) and `attempt`. A name missing from the
row, or a division by zero, is "unknown" (three-valued logic: `unknown or true` is true); a
condition that ends up unknown does not fire.
Every error names the column it is at.
"""

from __future__ import annotations

import difflib
import math
import re

# The fields of metrics.jsonl (README.md, "Training one run") that are numbers or booleans,
# plus the supervisor's own.
METRIC_NAMES = (
    "step", "loss", "mean_reward", "correct_rate", "running_correct_rate", "sepa_lambda",
    "sepa_gate_open", "num_datums", "skipped_groups", "max_token_hit_rate",
    "mean_completion_tokens", "step_time_s", "sample_time_s", "train_time_s", "throttle_wait_s",
    "tokens_per_second", "batch_size", "group_size", "lr", "grad_norm", "exec_surprisal_mean",
    "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var", "planning_token_fraction",
    "peak_memory_mb", "time", "seed")
EXTRA_NAMES = ("elapsed_s", "attempt")
KNOWN_NAMES = METRIC_NAMES + EXTRA_NAMES
NAME_PREFIXES = ("eval_",)  # held-out evaluation figures merged into the row by the trainer

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op><=|>=|==|!=|[<>+\-*/()])|(?P<bad>\S))")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
KEYWORDS = ("and", "or", "not", "true", "false")


class ExprError(ValueError):
    def __init__(self, message: str, column: int):
        super().__init__(f"column {column}: {message}")
        self.column = column


class _Parser:
    def __init__(self, text: str, known: tuple[str, ...] | None):
        self.text, self.known = text, known
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, 1-based column)
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind == "bad":
                hint = " (use and/or/not)" if m.group(kind) in "&|!" else ""
                hint = " (comparisons are ==)" if m.group(kind) == "=" else hint
                raise ExprError(f"unexpected character {m.group(kind)!r}{hint}", m.start(kind) + 1)
            if kind:
                self.tokens.append((kind, m.group(kind), m.start(kind) + 1))
        self.pos = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "", len(self.text) + 1)

    def take(self, *texts: str) -> str | None:
        kind, text, _ = self.peek()
        if kind in ("op", "name") and text in texts:
            self.pos += 1
            return text
        return None

    def parse(self):
        if not self.tokens:
            raise ExprError("empty condition", 1)
        tree = self.or_()
        kind, text, col = self.peek()
        if kind != "end":
            raise ExprError(f"unexpected {text!r} (expected and/or, or the end)", col)
        if tree[0] not in ("and", "or", "not", "cmp", "bool"):
            raise ExprError("expected a condition such as `step >= 50 and correct_rate < 0.05`, "
                            "found a number", 1)
        return tree

    def or_(self):
        node = self.and_()
        while self.take("or"):
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.take("and"):
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.take("not"):
            return ("not", self.not_())
        return self.cmp()

    def cmp(self):
        left = self.sum()
        op = self.take(*COMPARISONS)
        if op is None:
            return left
        node = ("cmp", op, left, self.sum())
        _, text, col = self.peek()
        if text in COMPARISONS:
            raise ExprError(f"chained comparison {text!r}: write `a < b and b < c`", col)
        return node

    def sum(self):
        node = self.prod()
        while (op := self.take("+", "-")) is not None:
            node = ("arith", op, node, self.prod())
        return node

    def prod(self):
        node = self.unary()
        while (op := self.take("*", "/")) is not None:
            node = ("arith", op, node, self.unary())
        return node

    def unary(self):
        kind, text, col = self.peek()
        if self.take("-"):
            return ("neg", self.unary())
        if self.take("("):
            node = self.or_()
            if not self.take(")"):
                raise ExprError("missing ')'", self.peek()[2])
            return node
        if kind == "num":
            self.pos += 1
            return ("num", float(text))
        if kind == "name" and text in ("true", "false"):
            self.pos += 1
            return ("bool", text == "true")
        if kind == "name" and text not in KEYWORDS:
            self.pos += 1
            if self.known is not None and text not in self.known and not text.startswith(NAME_PREFIXES):
                close = difflib.get_close_matches(text, self.known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ExprError(f"unknown name {text!r}{hint}; names are metrics fields "
                                f"(e.g. step, correct_rate, mean_reward, loss), elapsed_s, attempt", col)
            return ("name", text)
        what = "the end" if kind == "end" else repr(text)
        raise ExprError(f"expected a number, a name or '(', found {what}", col)


def parse(text: str, known: tuple[str, ...] | None = KNOWN_NAMES):
    """The tree of `text`, or ExprError (with its column). `known=None` accepts any name."""
    if not isinstance(text, str):
        raise ExprError(f"expected a string, found {type(text).__name__}", 1)
    return _Parser(text, known).parse()


def names(tree) -> set[str]:
    if tree[0] == "name":
        return {tree[1]}
    return set().union(*(names(t) for t in tree[1:] if isinstance(t, tuple)))


class _Unknown(Exception):
    pass


def _value(tree, row: dict):
    tag = tree[0]
    if tag in ("num", "bool"):
        return tree[1]
    if tag == "name":
        v = row.get(tree[1])
        if isinstance(v, bool) or isinstance(v, (int, float)) and math.isfinite(v):
            return v
        raise _Unknown
    if tag == "neg":
        return -_value(tree[1], row)
    if tag == "arith":
        a, b = _value(tree[2], row), _value(tree[3], row)
        if tree[1] == "/" and b == 0:
            raise _Unknown
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0}[tree[1]]
    if tag == "cmp":
        a, b = _value(tree[2], row), _value(tree[3], row)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[tree[1]]
    if tag in ("not", "and", "or"):
        truth = _truth(tree, row)
        if truth is None:
            raise _Unknown
        return truth
    raise ValueError(f"bad expression node {tag!r}")


def _truth(tree, row: dict) -> bool | None:
    """Three-valued (Kleene) logic: `unknown or True` is True, `unknown and False` is False."""
    tag = tree[0]
    if tag == "not":
        inner = _truth(tree[1], row)
        return None if inner is None else not inner
    if tag in ("and", "or"):
        a, b = _truth(tree[1], row), _truth(tree[2], row)
        decisive = tag == "or"  # the value that settles it whatever the other side is
        if a is decisive or b is decisive:
            return decisive
        return None if a is None or b is None else not decisive
    try:
        return bool(_value(tree, row))
    except _Unknown:
        return None


def evaluate(tree, row: dict) -> bool | None:
    """True/False, or None when it depends on a name missing from `row` (or a division by zero)."""
    return _truth(tree, row)


# -- [[campaign.rules]] tables -------------------------------------------------------------
RULE_ACTIONS = ("kill", "pause", "notify")
RULE_KEYS = ("when", "action", "name")


def check_rules(rules: list[dict]) -> list[tuple[str, str]]:
    """Problems of `[[campaign.rules]]` as (key suffix, message), e.g. ("[1].when", "column 9: …"),
    so that the config loader locates each one on its line."""
    problems = []
    for i, rule in enumerate(rules):
        for key in rule:
            if key not in RULE_KEYS:
                close = difflib.get_close_matches(key, RULE_KEYS, n=1)
                problems.append((f"[{i}].{key}", f"unknown key {key!r} of a rule (keys: "
                                 f"{', '.join(RULE_KEYS)})" + (f"; did you mean {close[0]!r}?" if close else "")))
        when = rule.get("when")
        if when is None:
            problems.append((f"[{i}]", ('a rule needs `when = "CONDITION"`, e.g. '
                                        '"step >= 50 and correct_rate < 0.05"')))
        else:
            try:
                parse(when)
            except ExprError as exc:
                problems.append((f"[{i}].when", f"{exc} in {when!r}"))
        action = rule.get("action")
        if action not in RULE_ACTIONS:
            found = "nothing" if action is None else repr(action)
            problems.append((f"[{i}].action" if action is not None else f"[{i}]",
                             (f"expected action = one of {', '.join(map(repr, RULE_ACTIONS))}, "
                              f"found {found}")))
        if "name" in rule and not isinstance(rule["name"], str):
            problems.append((f"[{i}].name", "expected a string"))
    return problems
