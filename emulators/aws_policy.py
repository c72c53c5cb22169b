"""A small IAM policy evaluator for the AWS emulator: trust policies, key policies and identity policies.

moto, in its default mode, ignores all three; the emulator's proxy (``aws_proxy``) asks this module instead.
It covers what Kodori's access model uses, evaluated the way AWS documents it:

- statements with ``Effect``, ``Principal``/``NotPrincipal`` (``"*"``, ``{"AWS": ...}`` with account ids,
  account root ARNs, user/role ARNs; a role ARN also matches that role's ``assumed-role`` sessions),
  ``Action``/
  ``NotAction`` and ``Resource``/``NotResource`` with ``*``/``?`` wildcards, and ``Condition`` blocks with the
  operators StringEquals, StringNotEquals, StringLike, StringNotLike, StringEqualsIgnoreCase, ArnEquals,
  ArnLike, Null and Bool (an ``…IfExists`` suffix is honoured);
- an explicit Deny wins over any Allow; no matching Allow is an implicit deny.

Condition operators it does not know make an Allow statement not apply and a Deny statement apply: the
evaluator fails closed rather than granting by accident.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from typing import Any

ALLOW, DENY, IMPLICIT_DENY = "allow", "deny", "implicit"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    # fnmatch's [] character classes are not IAM syntax; escape them so only * and ? are special.
    escaped = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, escaped)


def account_of(arn: str) -> str:
    """The account id in an ARN (``arn:aws:iam::123456789012:role/x`` → ``123456789012``)."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def role_arn_of_session(arn: str) -> str | None:
    """``arn:aws:sts::A:assumed-role/Role/session`` → ``arn:aws:iam::A:role/Role``."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role_name = parts[5].split("/")[1]
        return f"arn:aws:iam::{parts[4]}:role/{role_name}"
    return None


def principal_matches(spec: Any, principal_arn: str, accept_account: bool = True) -> bool:
    """Does a policy ``Principal`` element name this caller? With ``accept_account=False`` only a grant to the
    caller itself (or its role) counts, not one to its whole account (which delegates to IAM policies)."""
    if spec == "*":
        return True  # everyone, directly: public resource policies are direct grants in AWS
    if not isinstance(spec, Mapping):
        return False
    account = account_of(principal_arn)
    session_role = role_arn_of_session(principal_arn)
    for entry in _as_list(spec.get("AWS")):
        entry = str(entry)
        if entry in ("*", principal_arn) or (session_role is not None and entry == session_role):
            return True
        if accept_account and entry in (account, f"arn:aws:iam::{account}:root"):
            return True
    return False


def _condition_holds(operator: str, expected: Mapping[str, Any], context: Mapping[str, Any]) -> bool | None:
    """True/False for a known operator, None for one this evaluator does not implement."""
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    for key, wanted in expected.items():
        present = key in context and context[key] is not None
        actual = context.get(key)
        if base == "Null":
            if any(str(w).lower() == "true" for w in _as_list(wanted)) == present:
                return False
            continue
        if not present:
            if if_exists or base in ("StringNotEquals", "StringNotLike"):
                continue
            return False
        values = [str(v) for v in _as_list(actual)]
        candidates = [str(w) for w in _as_list(wanted)]
        if base in ("StringEquals", "ArnEquals"):
            ok = any(v == c for v in values for c in candidates)
        elif base == "StringEqualsIgnoreCase":
            ok = any(v.lower() == c.lower() for v in values for c in candidates)
        elif base in ("StringLike", "ArnLike"):
            ok = any(_wildcard(c, v) for v in values for c in candidates)
        elif base == "StringNotEquals":
            ok = not any(v == c for v in values for c in candidates)
        elif base == "StringNotLike":
            ok = not any(_wildcard(c, v) for v in values for c in candidates)
        elif base == "Bool":
            ok = any(v.lower() == c.lower() for v in values for c in candidates)
        else:
            return None
        if not ok:
            return False
    return True


def _statement_applies(
    statement: Mapping[str, Any],
    principal_arn: str | None,
    action: str,
    resource: str,
    context: Mapping[str, Any],
    accept_account: bool = True,
) -> bool:
    if principal_arn is not None:
        if "Principal" in statement and not principal_matches(
            statement["Principal"], principal_arn, accept_account
        ):
            return False
        if "NotPrincipal" in statement and principal_matches(statement["NotPrincipal"], principal_arn):
            return False
    if "Action" in statement:
        if not any(_wildcard(str(a), action, ignore_case=True) for a in _as_list(statement["Action"])):
            return False
    elif "NotAction" in statement and any(
        _wildcard(str(a), action, ignore_case=True) for a in _as_list(statement["NotAction"])
    ):
        return False
    if "Resource" in statement:
        if not any(_wildcard(str(r), resource) for r in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(
        _wildcard(str(r), resource) for r in _as_list(statement["NotResource"])
    ):
        return False
    deny = statement.get("Effect") == "Deny"
    for operator, expected in (statement.get("Condition") or {}).items():
        holds = _condition_holds(operator, expected, context)
        if holds is None:
            return deny  # unknown operator: fail closed
        if not holds:
            return False
    return True


def evaluate(
    documents: list[Any],
    action: str,
    resource: str,
    principal_arn: str | None = None,
    context: Mapping[str, Any] | None = None,
    accept_account: bool = True,
) -> str:
    """ALLOW, DENY (explicit) or IMPLICIT_DENY over policy documents (dicts or JSON strings).

    ``principal_arn`` is checked against ``Principal`` elements (resource policies: trust and key policies);
    identity policies have none, so it is ignored there. ``accept_account=False`` ignores grants to the
    caller's whole account (``"AWS": "<account>"`` or its root ARN): what is left is a direct grant.
    """
    context = context or {}
    allowed = False
    for document in documents:
        doc = json.loads(document) if isinstance(document, str) else document
        for statement in _as_list((doc or {}).get("Statement")):
            deny = statement.get("Effect") == "Deny"
            # An explicit Deny to the whole account still denies the caller, whatever accept_account says.
            if not _statement_applies(
                statement, principal_arn, action, resource, context, accept_account=accept_account or deny
            ):
                continue
            if deny:
                return DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY
