"""`make run` supervises its processes (issue 14 §4): a worker, beat or web server that dies is restarted
after a delay that grows while it keeps dying, one that dies at once five times in a row is given up on with
the command to see its error, PostgreSQL and Redis stay up throughout, and Ctrl-C still stops everything it
started.

The first test runs the real `python -m kodori.devtools.run` in a private state directory; the others drive
``Runner`` with real short-lived processes and a clock of their own, so that minutes of back-off take none.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from kodori.devtools import run
from kodori.devtools.servers import free_port

BASE_DIR = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def gone(proc: psutil.Process) -> bool:
    """Ended (an orphan's zombie waiting for init to reap it counts as ended)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def describe(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())}"
    return f"{proc.pid} (gone)"


class MakeRun:
    """`python -m kodori.devtools.run` in a state directory of its own, its output collected line by line."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        state.mkdir()
        # Private ports for its PostgreSQL and Redis, not the defaults a developer's own `make run` may hold.
        (state / "env").write_text(f"KODORI_PG_PORT={free_port()}\nKODORI_REDIS_PORT={free_port()}\n")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KODORI_") and k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_ENV"}
        }
        env |= {
            "KODORI_STATE_DIR": str(state),
            "KODORI_PORT": str(self.port),
            "KODORI_EMULATORS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.lines: list[str] = []
        self.cursor = 0  # wait_for() looks at the lines after its previous match
        self.changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kodori.devtools.run"],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()

    def output(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for i in range(self.cursor, len(self.lines)):
                    if match := re.search(pattern, self.lines[i]):
                        self.cursor = i + 1
                        return match
                self.cursor = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(f"make run never printed {pattern!r}; its output ends with:\n{tail}")
                self.changed.wait(min(left, 0.5))

    def login_status(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/accounts/login/")
            return conn.getresponse().status
        finally:
            conn.close()

    def wait_for_login_page(self, timeout: float) -> None:
        def answers() -> bool:
            with contextlib.suppress(OSError, http.client.HTTPException):
                return self.login_status() == 200
            return False

        wait_until(answers, timeout, "the login page")

    def celery(self, command: str) -> psutil.Process:
        """make run's own child running `celery -A kodori <command>`."""
        for proc in psutil.Process(self.proc.pid).children():
            cmdline = proc.cmdline()
            if any(arg.endswith("/celery") for arg in cmdline) and command in cmdline:
                return proc
        raise AssertionError(f"make run has no `celery {command}` child")

    def urls(self) -> dict[str, str]:
        lines = (self.state / "env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))

    def assert_servers_answer(self) -> None:
        urls = self.urls()
        with psycopg.connect(urls["DATABASE_URL"], connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        client = redis.Redis.from_url(urls["REDIS_URL"], socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()
        assert self.login_status() == 200

    def started_processes(self) -> list[psutil.Process]:
        """What make run started that runs now: its descendants, and PostgreSQL (which pg_ctl detached)."""
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        pid_file = self.state / "pg" / "data" / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [*procs, postmaster, *postmaster.children(recursive=True)]

    def strays(self) -> list[psutil.Process]:
        """Processes of this state directory, by command line or environment, whoever their parent is now."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != self.proc.pid and not gone(proc):
                    in_cmdline = any(str(self.state) in arg for arg in proc.cmdline())
                    if in_cmdline or proc.environ().get("KODORI_STATE_DIR") == str(self.state):
                        found.append(proc)
        return found

    def kill_everything(self) -> None:
        """Clean up after a failed test: nothing of it may outlive the test."""
        if self.proc.poll() is None:
            leftovers = []
            with contextlib.suppress(psutil.Error, OSError):
                leftovers = self.started_processes()
            self.proc.kill()
            self.proc.wait()
            for proc in leftovers:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        for proc in self.strays():
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.fixture
def make_run() -> Iterator[MakeRun]:
    # Not under pytest's tmp_path: every pytest session that starts makes that root private again (0700), and
    # PostgreSQL, which runs as another account when we are root, would lose its way to its data directory.
    root = Path(tempfile.mkdtemp(prefix="kodori-make-run-"))
    runner = MakeRun(root / "state")
    try:
        yield runner
    finally:
        runner.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


def kill_group_and_see_it_restarted(make_run: MakeRun, command: str, name: str) -> None:
    victim = make_run.celery(command)
    assert os.getpgid(victim.pid) == victim.pid, f"celery {command} must lead a process group of its own"
    group = [victim, *victim.children(recursive=True)]
    os.killpg(victim.pid, signal.SIGKILL)

    said = make_run.wait_for(
        rf"make run: {name} \(pid (\d+)\) was killed by SIGKILL; restarting it in 1 s\.", 15
    )
    assert int(said[1]) == victim.pid
    new_pid = int(make_run.wait_for(rf"make run: restarted {name} \(pid (\d+)\)\.", 15)[1])
    assert new_pid != victim.pid
    assert make_run.celery(command).pid == new_pid
    wait_until(lambda: all(gone(proc) for proc in group), 5, f"what was left of celery {command}")
    make_run.assert_servers_answer()
    assert make_run.proc.poll() is None


@pytest.mark.slow
def test_make_run_restarts_a_killed_worker_and_beat_and_ctrl_c_stops_everything(make_run: MakeRun) -> None:
    make_run.wait_for(r"Kodori is running at http://127\.0\.0\.1:\d+/", 60)
    make_run.wait_for_login_page(30)

    kill_group_and_see_it_restarted(make_run, "worker", "the Celery worker")
    kill_group_and_see_it_restarted(make_run, "beat", "Celery beat")

    started = make_run.started_processes()
    assert any(proc.name() == "redis-server" for proc in started)
    make_run.proc.send_signal(signal.SIGINT)
    assert make_run.proc.wait(timeout=45) == 0, make_run.output()
    assert make_run.output().endswith("Stopped."), make_run.output()
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(gone(proc) for proc in started), 5, "every process make run started to end")
    assert [describe(proc) for proc in started if not gone(proc)] == []
    assert [describe(proc) for proc in make_run.strays()] == []
    urls = make_run.urls()
    for url in (urls["DATABASE_URL"], urls["REDIS_URL"]):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- Runner's supervision, with real processes and a clock of the test's own ----------------------------


@pytest.fixture
def runner() -> Iterator[run.Runner]:
    """A Runner; its stop() takes over SIGINT and SIGTERM, which pytest gets back afterwards."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    runner = run.Runner()
    try:
        yield runner
    finally:
        runner.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def wait_dead(child: run.Child) -> None:
    wait_until(lambda: not child.running(), 10, f"{child.name} to end")


def test_a_process_that_dies_at_once_is_restarted_later_each_time_then_given_up(
    runner: run.Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    child = runner.spawn("the broken one", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    now = child.started
    delays = []
    while not child.given_up:
        wait_dead(child)
        now = child.started + 2
        runner.supervise(now)
        if child.restart_at is not None:
            delays.append(child.restart_at - now)
            now = child.restart_at
            runner.supervise(now)
            assert child.proc is not None and child.proc.returncode is None  # started again
    assert delays == [1, 2, 4, 8]
    out = capsys.readouterr().out
    assert "make run: the broken one (pid " in out
    assert ") exited with status 3; restarting it in 1 s.\n" in out
    assert "restarting it in 8 s." in out
    assert out.count("make run: restarted the broken one (pid ") == 4
    assert "exited with status 3, and it keeps dying: 5 times in a row within 60 s. Not restarting it" in out
    assert "To see its error, run it alone in another terminal:" in out
    assert "-c 'raise SystemExit(3)'\n" in out  # the command, quoted for the shell
    runner.supervise(now + 600)
    assert child.given_up
    assert child.proc is not None and child.proc.returncode == 3  # not started again


def test_the_delay_grows_to_30_s_while_it_keeps_dying_and_resets_once_it_stayed_up_a_minute(
    runner: run.Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = runner.spawn("the sleeper", sleep, dict(os.environ))

    def dies_after(seconds: float) -> float:
        """Kill it as if it had run that long; the delay before make run starts it again."""
        assert child.proc is not None
        runner.supervise(child.started + seconds - 1)  # still up: nothing to do
        assert child.restart_at is None
        os.kill(child.proc.pid, signal.SIGKILL)
        wait_dead(child)
        now = child.started + seconds
        runner.supervise(now)
        assert child.restart_at is not None
        delay = child.restart_at - now
        runner.supervise(child.restart_at)
        assert child.running()
        return delay

    # Dying after 40 s each time is never five times within a minute: restarted for ever, at most every 30 s.
    assert [dies_after(40) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert not child.given_up
    assert dies_after(61) == 1  # it had stayed up a minute
    out = capsys.readouterr().out
    assert "make run: the sleeper (pid " in out
    assert ") was killed by SIGKILL; restarting it in 30 s.\n" in out
    assert "keeps dying" not in out


def test_stop_ends_each_process_group_with_the_children_its_process_left_behind(
    runner: run.Runner, tmp_path: Path
) -> None:
    script = "sleep 300 & echo $! > {}; exec sleep 301"
    out = tmp_path / "grandchild-pid"
    child = runner.spawn("the parent", ["sh", "-c", script.format(out)], dict(os.environ))
    wait_until(lambda: out.exists() and out.read_text().strip(), 10, "the grandchild's pid")
    grandchild = psutil.Process(int(out.read_text()))
    assert child.proc is not None
    assert os.getpgid(grandchild.pid) == child.proc.pid
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 5
    assert child.proc.returncode == -signal.SIGTERM
    wait_until(lambda: gone(grandchild), 5, "the grandchild to end")
