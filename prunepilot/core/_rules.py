"""Apply the channel rule of each recorded op (rules live in the ``_rules_*`` modules)."""

from __future__ import annotations

from typing import Any

from . import _rules_attention, _rules_layers, _rules_layout, _rules_reduce, _rules_spatial
from ._analysis import Analysis, SchemaArg, bind_schema, record_inputs, schema_args
from ._capture import OpRecord, Ref
from ._registry import RULES, UNBOUND, Rule, unknown
from ._rules_pointwise import elementwise, is_pointwise

__all__ = ["apply_rule"]

# Importing the rule modules registers their rules.
_LOADED = (_rules_attention, _rules_layers, _rules_layout, _rules_reduce, _rules_spatial)


def apply_rule(an: Analysis, rec: OpRecord) -> None:
    """Apply the rule for one recorded op (or pin everything if there is none)."""
    func = rec.func
    got = _FUNCS.get(id(func))  # by id: overloads hash in Python, and live forever
    if got is None or got[0] is not func:
        got = _FUNCS[id(func)] = _func_info(func)
    _, rule, schema, writes_first = got
    if rule is None:
        if not any(o is not None for o in rec.outputs) and not record_inputs(rec):
            return
        rule = unknown
    b = bind_schema(schema, rec.args, rec.kwargs) if schema is not None else {}
    ins = record_inputs(rec)
    mutated = _mutated_view(an, rec) if writes_first else None
    rule(an, rec, b)
    if ins:
        weightlike = an.weightlike
        for r in ins:
            if r.node not in weightlike:  # (the first input, as a rule: an activation)
                break
        else:
            weightlike.update(o.node for o in rec.outputs if o is not None)
    if mutated is not None:
        an.pin_all([mutated, *ins], f"{rec.name} writes into a view of another tensor")


# Per overload: the overload, its rule (None: none), its schema arguments (None: the rule
# reads no arguments by name, see `UNBOUND`), whether it writes into its first argument.
_FUNCS: dict[int, tuple[Any, Rule | None, list[SchemaArg] | None, bool]] = {}


def _func_info(func: Any) -> tuple[Any, Rule | None, list[SchemaArg] | None, bool]:
    rule = RULES.get(func.overloadpacket)
    if rule is None and is_pointwise(func):
        rule = elementwise
    args = func._schema.arguments
    writes = bool(args and args[0].alias_info is not None and args[0].alias_info.is_write)
    return func, rule, None if rule in UNBOUND else schema_args(func), writes


def _mutated_view(an: Analysis, rec: OpRecord) -> Ref | None:
    first = rec.args[0] if rec.args else None
    if isinstance(first, Ref) and first.node in an.cap.bases:
        return Ref(an.cap.bases[first.node])
    return None
