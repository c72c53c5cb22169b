"""The short provider labels audit events record stay in step with the wrap methods keys can have."""

from __future__ import annotations

from audit import payloads
from encryption.models import WrapMethod


def test_every_wrap_method_has_a_label() -> None:
    missing = [method.value for method in WrapMethod if method.value not in payloads.PROVIDER_LABELS]
    assert missing == []


def test_no_label_names_an_unknown_wrap_method() -> None:
    unknown = set(payloads.PROVIDER_LABELS) - set(WrapMethod.values)
    assert unknown == set()


def test_labels_are_distinct_so_events_tell_providers_apart() -> None:
    labels = list(payloads.PROVIDER_LABELS.values())
    assert len(labels) == len(set(labels))


def test_it_labels_each_wrap_method_through_provider_label() -> None:
    assert payloads.provider_label(WrapMethod.CUSTOMER_KMS_AWS) == "aws-kms"
    assert payloads.provider_label(WrapMethod.GLOBAL) == "kodori-managed"
