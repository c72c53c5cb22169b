"""`make run`: start everything Kodori needs on this machine and stop it all on Ctrl-C.

Without ``DATABASE_URL`` / ``REDIS_URL`` in the environment it starts a private PostgreSQL and Redis under
``.kodori/`` (see ``servers``); with them, it uses yours. Then it migrates, seeds the demo tenants, and runs
the web server (gunicorn), a Celery worker and Celery beat until interrupted. It also starts the local AWS,
Azure and GCP KMS emulators (``emulators.dev``) and points Kodori at them, so a key can be registered in each
cloud without leaving this machine; ``KODORI_EMULATORS=0`` skips them. After the seed, ``manage.py
emulator_demo`` gives each demo tenant its AWS key and role (the role trusts the tenant's ExternalId, which
only exists once the database does); the identifiers to paste into the registration forms, per cloud, are
printed as the web server starts. ``migrate``, ``seed_demo`` and ``emulator_demo`` share one child process
(``prepare_database``). Under the emulators Kodori probes keys every 30 s and keeps unwrapped customer keys
30 s (``KODORI_REVERIFY_INTERVAL_SECONDS``, ``KODORI_TKV_CACHE_TTL_CUSTOMER``; the environment wins), so
revoking a key in an emulator shows in the browser within a minute. Re-running reuses the same data, ports,
secrets (kept in ``.kodori/env``) and emulator keys (``.kodori/emulators``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .servers import PostgresServer, RedisServer, ServerUnavailable, new_password, port_is_free

if TYPE_CHECKING:
    from emulators.dev import DevEmulators

BASE_DIR = Path(__file__).resolve().parents[2]
# What make run uses under the emulators unless the environment says otherwise: revocation shows quickly.
EMULATOR_DEFAULTS = {"KODORI_REVERIFY_INTERVAL_SECONDS": "30", "KODORI_TKV_CACHE_TTL_CUSTOMER": "30"}
STATE_DIR = Path(os.environ.get("KODORI_STATE_DIR", BASE_DIR / ".kodori"))
ENV_FILE = STATE_DIR / "env"
DEMO_KEYS_FILE = STATE_DIR / "emulators" / "demo-keys.txt"  # emulator_demo's output, printed after start


def _read_env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def _write_env_file(values: dict[str, str]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    body = "# Written by `make run`: this machine's private servers and development secrets.\n"
    body += "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    ENV_FILE.write_text(body)
    ENV_FILE.chmod(0o600)


def _pick_port(preferred: int) -> int:
    port = preferred
    while not port_is_free(port):
        port += 1
    return port


def _state() -> dict[str, str]:
    """Load or create the per-checkout state: ports, passwords and development secrets."""
    values = _read_env_file()
    defaults = {
        "KODORI_PG_PORT": str(_pick_port(54329)),
        "KODORI_PG_PASSWORD": new_password(),
        "KODORI_REDIS_PORT": str(_pick_port(63799)),
        "KODORI_REDIS_PASSWORD": new_password(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "AUTH_SECRET": secrets.token_urlsafe(48),
        "KODORI_DEMO_PASSWORD": "demo-" + secrets.token_urlsafe(9),
    }
    changed = False
    for key, value in defaults.items():
        if key not in values:
            values[key] = value
            changed = True
    if changed:
        _write_env_file(values)
    return values


class Runner:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.servers: list[PostgresServer | RedisServer] = []
        self.emulators: DevEmulators | None = None
        self.stopping = False

    def start_servers(self, state: dict[str, str], env: dict[str, str]) -> None:
        if os.environ.get("DATABASE_URL"):
            print("Using DATABASE_URL from the environment.")
        else:
            pg = PostgresServer(STATE_DIR / "pg", int(state["KODORI_PG_PORT"]), state["KODORI_PG_PASSWORD"])
            # A port taken since the first run: the cluster keeps its data, only the port moves.
            if not port_is_free(pg.port) and not (pg.data_dir / "postmaster.pid").exists():
                pg.port = _pick_port(pg.port)
            print(f"Starting PostgreSQL on 127.0.0.1:{pg.port} (data in {pg.data_dir}) ...")
            self.servers.append(pg.start())
            env["DATABASE_URL"] = pg.url
        if os.environ.get("REDIS_URL"):
            print("Using REDIS_URL from the environment.")
        else:
            rd = RedisServer(
                STATE_DIR / "redis",
                _pick_port(int(state["KODORI_REDIS_PORT"])),
                state["KODORI_REDIS_PASSWORD"],
                persistent=True,
            )
            print(f"Starting Redis on 127.0.0.1:{rd.port} ...")
            self.servers.append(rd.start())
            env["REDIS_URL"] = rd.url

    def start_emulators(self, env: dict[str, str]) -> None:
        if os.environ.get("KODORI_EMULATORS", "1") == "0":
            print("Cloud KMS emulators skipped (KODORI_EMULATORS=0).")
            return
        from emulators.dev import start_all

        print("Starting the local AWS, Azure and GCP KMS emulators ...")
        self.emulators = start_all(STATE_DIR / "emulators")
        for line in self.emulators.summary:
            print(f"  {line}")
        env.update(self.emulators.env)
        for name, value in EMULATOR_DEFAULTS.items():
            env.setdefault(name, value)

    def prepare(self, env: dict[str, str], password: str) -> None:
        """Run :func:`prepare_database` in a child process with Kodori's environment."""
        DEMO_KEYS_FILE.unlink(missing_ok=True)
        code = "import sys; from kodori.devtools.run import prepare_database; prepare_database(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, password], env=env, check=True, cwd=BASE_DIR)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        # Own process group, so Ctrl-C reaches us first and we stop children in order.
        proc = subprocess.Popen(cmd, env=env, cwd=BASE_DIR, start_new_session=True)
        self.children.append((name, proc))

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        print("\nStopping Kodori ...")
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.emulators is not None:
            self.emulators.stop()
        for server in reversed(self.servers):
            server.stop()
        print("Stopped.")

    def run(self) -> int:
        state = _state()
        env = {**os.environ, **{k: v for k, v in state.items() if k not in os.environ}}
        env.setdefault("DJANGO_ENV", "development")
        env["KODORI_STATE_DIR"] = str(STATE_DIR)
        port = os.environ.get("KODORI_PORT", "8000")
        # Ctrl-C and SIGTERM both mean "stop everything": raise KeyboardInterrupt even when the shell started
        # us with SIGINT ignored (as it does for background jobs).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            self.start_servers(state, env)
            self._remember_urls(env)
            self.start_emulators(env)
            self.prepare(env, state["KODORI_DEMO_PASSWORD"])
            bin_dir = Path(sys.executable).parent
            self.spawn(
                "web",
                [
                    str(bin_dir / "gunicorn"),
                    "kodori.wsgi",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "300",
                    "--access-logfile",
                    "-",
                ],
                env,
            )
            self.spawn(
                "worker",
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "kodori",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "2",
                    "-n",
                    "worker@%h",
                ],
                env,
            )
            self.spawn(
                "beat",
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "kodori",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(STATE_DIR / "celerybeat-schedule"),
                ],
                env,
            )
            demo_keys = DEMO_KEYS_FILE.read_text() if DEMO_KEYS_FILE.exists() else ""
            print(
                f"\n{demo_keys}\nKodori is running at http://127.0.0.1:{port}/  (Ctrl-C stops everything)\n"
            )
            while True:
                for name, proc in self.children:
                    if proc.poll() is not None:
                        print(f"{name} exited with status {proc.returncode}; stopping.")
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        except (ServerUnavailable, subprocess.CalledProcessError) as exc:
            print(f"make run failed: {exc}", file=sys.stderr)
            return 1
        finally:
            self.stop()

    def _remember_urls(self, env: dict[str, str]) -> None:
        """Write the live URLs into .kodori/env so `./manage.py shell` finds the same servers."""
        values = _read_env_file()
        values["DATABASE_URL"] = env["DATABASE_URL"]
        values["REDIS_URL"] = env["REDIS_URL"]
        _write_env_file(values)


def prepare_database(password: str) -> None:
    """``migrate``, ``seed_demo`` and, under the emulators, ``emulator_demo``: one Django start-up, not three.

    ``emulator_demo``'s lines (what to paste into the registration forms) go to ``DEMO_KEYS_FILE``, which
    ``Runner`` prints once the web server started. A failure there is reported and does not stop `make run`.
    """
    import io

    import django
    from django.apps import apps
    from django.core.management import CommandError, call_command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kodori.settings")
    if not apps.ready:
        django.setup()
    call_command("migrate", interactive=False, verbosity=0, skip_checks=False)  # as `manage.py migrate` does
    call_command("seed_demo", password=password)
    if os.environ.get("KODORI_EMULATOR_AWS_ADMIN_URL"):
        out = io.StringIO()
        try:
            call_command("emulator_demo", stdout=out)
        except CommandError as err:
            print(f"The demo tenants' emulator keys were not provisioned: {err}", file=sys.stderr)
        else:
            DEMO_KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
            DEMO_KEYS_FILE.write_text(out.getvalue())


def main() -> int:
    return Runner().run()


if __name__ == "__main__":
    raise SystemExit(main())
