"""`make run`: start everything Kodori needs on this machine, keep it running, and stop it all on Ctrl-C.

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

The web server, the worker and beat are supervised (``Runner.supervise``): one that dies is restarted, with a
line saying so, after a delay that doubles from 1 s to at most 30 s while it keeps dying; one that dies five
times in a row within a minute is left stopped, with the command to run it alone and see its error, while the
rest keeps running. Each runs in a session (so a process group) of its own: Ctrl-C reaches only us, and its
own children (gunicorn's and Celery's workers) go with it. Ctrl-C or SIGTERM stops the three, then the
emulators, Redis and PostgreSQL, and exits 0.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
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


# How `make run` restarts a process that died: after 1 s, then 2, 4 ... at most 30 s while it keeps dying; one
# that stayed up a minute starts again from 1 s. Five crashes in a row within a minute: it stops trying.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
HEALTHY_AFTER = 60.0
GIVE_UP_CRASHES = 5
GIVE_UP_WINDOW = 60.0
STOP_TIMEOUT = 15.0  # how long the processes get to stop on their own before their groups are killed


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: nothing is left in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Child:
    """A process `make run` supervises, in a session (so a process group) of its own with its own children."""

    name: str  # for people: "the Celery worker"
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0  # in a row: since it last stayed up HEALTHY_AFTER
    recent_crashes: deque[float] = field(default_factory=lambda: deque(maxlen=GIVE_UP_CRASHES))
    restart_at: float | None = None  # dead, waiting to be started again
    given_up: bool = False

    def start(self, now: float) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=BASE_DIR, start_new_session=True)
        self.started = now
        self.restart_at = None
        return self.proc

    def running(self) -> bool:
        """Whether the process is still alive. Does not reap it: as long as it is a zombie, its pid (its
        process group's id) cannot be reused, so what is left of its group can still be killed safely."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return self.proc.poll() is None

    def reap(self) -> int:
        """Kill the rest of the exited (or hopeless) process's group and collect the process's exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            _kill_group(self.proc.pid)
        return self.proc.wait()

    def alone_command(self) -> str:
        """The shell command that runs this process on its own from the checkout, to see why it fails."""
        cmd = [str(Path(a).relative_to(BASE_DIR)) if a.startswith(f"{BASE_DIR}/") else a for a in self.cmd]
        line = shlex.join(cmd)
        if STATE_DIR != BASE_DIR / ".kodori":
            line = f"KODORI_STATE_DIR={shlex.quote(str(STATE_DIR))} {line}"
        return f"cd {shlex.quote(str(BASE_DIR))} && {line}"


class Runner:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.servers: list[PostgresServer | RedisServer] = []
        self.emulators: DevEmulators | None = None
        self.stopping = False
        self.stop_requested = False

    def start_servers(self, state: dict[str, str], env: dict[str, str]) -> None:
        if os.environ.get("DATABASE_URL"):
            print("Using DATABASE_URL from the environment.")
        else:
            pg = PostgresServer(STATE_DIR / "pg", int(state["KODORI_PG_PORT"]), state["KODORI_PG_PASSWORD"])
            # A port taken since the first run: the cluster keeps its data, only the port moves.
            if not port_is_free(pg.port) and not (pg.data_dir / "postmaster.pid").exists():
                pg.port = _pick_port(pg.port)
            print(f"Starting PostgreSQL on 127.0.0.1:{pg.port} (data in {pg.data_dir}) ...")
            self.servers.append(pg)  # before it starts, so that a Ctrl-C while it starts stops it too
            pg.start()
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
            self.servers.append(rd)
            rd.start()
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

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Child:
        # A session of its own: Ctrl-C reaches us first and we stop the children in order, and its process
        # group holds its own children (gunicorn's and Celery's workers), which go with it.
        child = Child(name, cmd, env)
        self.children.append(child)
        child.start(time.monotonic())
        return child

    def supervise(self, now: float) -> None:
        """Restart what died, after a delay that grows while it keeps dying; give up on what dies at once."""
        for child in self.children:
            if child.proc is None or child.given_up:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    proc = child.start(now)
                    print(f"make run: restarted {child.name} (pid {proc.pid}).")
            elif child.running():
                if child.crashes and now - child.started >= HEALTHY_AFTER:
                    child.crashes = 0
                    child.recent_crashes.clear()
            else:
                self._crashed(child, now)

    def _crashed(self, child: Child, now: float) -> None:
        assert child.proc is not None
        pid = child.proc.pid
        how = _describe_exit(child.reap())
        if now - child.started >= HEALTHY_AFTER:
            child.crashes = 0
            child.recent_crashes.clear()
        child.crashes += 1
        child.recent_crashes.append(now)
        if len(child.recent_crashes) == GIVE_UP_CRASHES and now - child.recent_crashes[0] <= GIVE_UP_WINDOW:
            child.given_up = True
            print(
                f"make run: {child.name} (pid {pid}) {how}, and it keeps dying: {GIVE_UP_CRASHES} times in a "
                f"row within {GIVE_UP_WINDOW:g} s. Not restarting it again; everything else keeps running.\n"
                f"  To see its error, run it alone in another terminal:\n    {child.alone_command()}\n"
                "  Once it starts cleanly, stop make run (Ctrl-C) and start it again."
            )
            return
        delay = min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** min(child.crashes - 1, 10))
        child.restart_at = now + delay
        print(f"make run: {child.name} (pid {pid}) {how}; restarting it in {delay:g} s.")

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        print("\nStopping Kodori ...")
        unreaped = [c for c in reversed(self.children) if c.proc is not None and c.proc.returncode is None]
        for child in unreaped:
            assert child.proc is not None
            os.kill(child.proc.pid, signal.SIGTERM)  # not reaped yet, so still our child (or its zombie)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(child.running() for child in unreaped) and time.monotonic() < deadline:
            time.sleep(0.1)
        for child in unreaped:
            child.reap()  # and whatever is left of its group (a stuck gunicorn or Celery worker) is killed
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
            # From here on a stop signal only sets a flag, so that it never lands between starting a child
            # and recording it: the supervising loop below sees the flag and returns.
            signal.signal(signal.SIGINT, self._request_stop)
            signal.signal(signal.SIGTERM, self._request_stop)
            bin_dir = Path(sys.executable).parent
            self.spawn(
                "the web server (gunicorn)",
                [
                    str(bin_dir / "gunicorn"),
                    "kodori.wsgi",
                    "--config",
                    "python:kodori.gunicorn_conf",
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
                "the Celery worker",
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
                "Celery beat",
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
            while not self.stop_requested:
                self.supervise(time.monotonic())
                time.sleep(0.2)
            return 0
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
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Our lines interleave with the children's (same terminal or pipe): print each as it comes.
        sys.stdout.reconfigure(line_buffering=True)
    return Runner().run()


if __name__ == "__main__":
    raise SystemExit(main())
