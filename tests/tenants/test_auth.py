"""Signing in and out, and password reset by e-mail."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_it_signs_in_with_email_and_password(owner: Any) -> None:
    client = Client()
    r = client.post(reverse("login"), {"username": "owner@acme.test", "password": PASSWORD})
    assert r.status_code == 302 and r["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200


def test_it_refuses_a_wrong_password(owner: Any) -> None:
    client = Client()
    r = client.post(reverse("login"), {"username": "owner@acme.test", "password": "wrong"})
    assert r.status_code == 200
    assert client.get(reverse("home")).status_code == 302


def test_sign_out_needs_post_and_ends_the_session(as_user: Any, owner: Any) -> None:
    client = as_user(owner)
    assert client.get(reverse("logout")).status_code == 405
    client.post(reverse("logout"))
    assert client.get(reverse("home")).status_code == 302


def test_password_reset_mails_a_working_link(owner: Any) -> None:
    client = Client()
    client.post(reverse("password_reset"), {"email": "owner@acme.test"})
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/reset/\S+)", str(mail.outbox[0].body))
    assert link is not None
    r = client.get(link.group(1), follow=True)
    form_url = r.redirect_chain[-1][0]
    new_password = "a brand new long password"
    r = client.post(form_url, {"new_password1": new_password, "new_password2": new_password})
    assert r.status_code == 302
    assert Client().login(username="owner@acme.test", password=new_password)


def test_password_reset_does_not_reveal_unknown_addresses(db: None) -> None:
    r = Client().post(reverse("password_reset"), {"email": "nobody@nowhere.test"})
    assert r.status_code == 302
    assert len(mail.outbox) == 0
