"""What the adapters share: which values engramd can filter on, and the
frameworks' filter dicts as engram.Memory `where` predicates."""

import math
from typing import Any, Dict, List, Optional, Tuple

_OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def is_scalar(value: Any) -> bool:
    """A value episode metadata holds and filters compare: a string, a
    boolean, an integer or a finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, bool, int))


def predicates(filters: Optional[Dict[str, Any]], prefix: str) -> List[Tuple[str, str, Any]]:
    """{"field": value} or {"field": {"$gte": 1, ...}} (the "$" optional:
    LangGraph writes it, Mem0 may not), ANDed, as (prefix + field, op,
    value); ValueError for another operator or a value that is not scalar."""
    where = []
    for field, condition in (filters or {}).items():
        conditions = condition.items() if isinstance(condition, dict) else [("eq", condition)]
        for operator, operand in conditions:
            name = operator.lstrip("$")
            if name not in _OPERATORS:
                raise ValueError(f"filter operator {operator!r} on {field!r} is not one of "
                                 f"{sorted('$' + op for op in _OPERATORS)}")
            if not is_scalar(operand):
                raise ValueError(f"filter on {field!r} compares with {operand!r}; only "
                                 "strings, numbers and booleans are filterable")
            where.append((prefix + field, _OPERATORS[name], operand))
    return where
