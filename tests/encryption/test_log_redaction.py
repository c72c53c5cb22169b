"""The deployment's logging configuration redacts static credentials from every console line."""

from __future__ import annotations

import logging
import logging.config

import pytest
from django.conf import settings


def test_the_console_handler_redacts_static_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(settings.LOGGING)
    secret_id = "AKIA" + "Z7QXW3EXAMPLE4KD"
    logging.getLogger("kodori.somewhere.deep").warning("tenant pasted %s into the form", secret_id)
    err = capsys.readouterr().err
    assert "tenant pasted" in err
    assert secret_id not in err
