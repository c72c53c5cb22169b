"""Run the local AWS, Azure and GCP KMS emulators and print the settings that point Kodori at them."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from emulators.dev import start_all


class Command(BaseCommand):
    help = "Start the AWS / Azure / GCP KMS emulators on 127.0.0.1 and print Kodori's settings for them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state-dir",
            default=str(Path(settings.DEV_STATE_DIR) / "emulators"),
            help="where Azure and GCP keys, TLS material and token files are kept",
        )
        parser.add_argument(
            "--free-ports",
            action="store_true",
            help="take free ports instead of the fixed ones make run uses",
        )

    def handle(self, *args: Any, state_dir: str, free_ports: bool, **options: Any) -> None:
        running = start_all(Path(state_dir), fixed_ports=not free_ports)
        try:
            for line in running.summary:
                self.stderr.write(line)
            self.stderr.write("Settings for Kodori's web and worker processes (shell syntax):")
            for name, value in sorted(running.env.items()):
                self.stdout.write(f"export {name}={value}")
            self.stdout.flush()
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
        finally:
            running.stop()
