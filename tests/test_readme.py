"""The README is true: every shell command in it is run here, against the running demo
(started with ``./scripts/demo`` as the README starts it), or its options checked by
``--help``, or listed in ``NOT_RUN`` with the reason.  A new command in the README fails
this test until it is run or given a reason."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port

BIN = Path(sys.executable).parent
README = REPO / "README.md"

NOT_RUN = {
    r"^\./scripts/test\b": "the whole test suite, of which this test is part",
    r"^export ": "sets credentials or a cluster (GCN, PostgreSQL, Kafka) for the commands "
                 "after it, which are not run here either",
    r"^mmbroker stage ": "needs Kafka and PostgreSQL: tests/test_stages.py and "
                         "tests/test_chaos.py run every stage; its --help is run here",
    r"^mmbroker serve$": "runs until stopped, reading GCN with the exported credentials; the "
                         "demo here runs `serve --demo`; its --help is run here",
    r"^\.venv/bin/python -m bench$": "every benchmark (minutes); `-m bench --help` is run",
    r"^mmbroker crossmatch calibrate$": "calibrates on observations, and the demo's alerts "
                                        "are all role=test: tests/test_cli.py runs it on "
                                        "synthetic observations",
}
"""Commands deliberately not run, by pattern, and why."""

PLACEHOLDER = re.compile(r"\[|\||\.\.\.|\b[A-Z][A-Z0-9_]*\b")
"""A synopsis rather than a command: optional parts, alternatives or placeholders."""


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README: its ``sh`` blocks (continuations joined, comments
    dropped) and the inline `mmbroker ...` commands of its prose."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                commands.append(re.sub(r"\s+", " ", line))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for inline in re.findall(r"`((?:\.venv/bin/)?mmbroker [^`]+)`", prose):
        command = re.sub(r"\s+", " ", inline).strip()
        if not PLACEHOLDER.search(command.removeprefix(".venv/bin/")):
            commands.append(command)
    return list(dict.fromkeys(commands))


def not_run_reason(command: str) -> str | None:
    for pattern, reason in NOT_RUN.items():
        if re.search(pattern, command):
            return reason
    return None


def _mmbroker_path(command: str) -> list[str] | None:
    """The subcommand words of an `mmbroker ...` command."""
    words = command.removeprefix(".venv/bin/").split()
    if not words or words[0] != "mmbroker":
        return None
    path = []
    for word in words[1:]:
        if word.startswith(("-", "[")) or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return path


def check_synopsis(command: str) -> None:
    """A synopsis line: each command it names exists and has each option it shows."""
    command = command.removeprefix(".venv/bin/")
    for part in command.split(" | "):
        part = part if part.startswith("mmbroker") else f"mmbroker {part}"
        path = _mmbroker_path(part)
        assert path is not None, part
        proc = subprocess.run([str(BIN / "mmbroker"), *path, "--help"], capture_output=True,
                              text=True, timeout=60, check=False, env=_plain_env())
        assert proc.returncode == 0, (part, proc.stderr)
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", part):
            assert option in proc.stdout, (part, option)


def _plain_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "100", **extra}


def test_readme_commands_are_found() -> None:
    commands = readme_commands(README.read_text())
    assert "./scripts/demo" in commands
    assert ".venv/bin/mmbroker alerts list --role test" in commands
    assert ".venv/bin/mmbroker token create --name me --scope ack" in commands
    assert any(c.startswith(".venv/bin/twistd -n") for c in commands)
    assert "are being built next" not in README.read_text()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``./scripts/demo`` as the README runs it (its own data directory and free ports)."""
    ports = {"http": free_port(), "receive": free_port(), "broadcast": free_port()}
    env = _plain_env(MMBROKER_DATA_DIR=str(tmp_path / "data"),
                     MMBROKER_VTP_RECEIVE_PORT=str(ports["receive"]),
                     MMBROKER_VTP_BROADCAST_PORT=str(ports["broadcast"]))
    env.pop("MMBROKER_DATABASE_URL", None)
    log_path = tmp_path / "demo.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["./scripts/demo", "--port", str(ports["http"])], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "demo: done" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.3)
        yield {"ports": ports, "env": env, "log": log_path, "tmp": tmp_path}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _localize(command: str, demo: dict[str, Any]) -> str:
    """The command pointed at this demo's ports and this checkout's .venv."""
    ports = demo["ports"]
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{ports['http']}")
    command = command.replace("127.0.0.1:8099", f"127.0.0.1:{ports['broadcast']}")
    command = re.sub(r"(^|\$\()\.venv/bin/", rf"\g<1>{BIN}/", command)
    return re.sub(r"(^|\$\()mmbroker\b", rf"\g<1>{BIN}/mmbroker", command)


@pytest.mark.timeout(420)
def test_every_readme_command_runs(demo: dict[str, Any]) -> None:
    first_screen = demo["log"].read_text(errors="replace")
    # The first screen is the broker's: no setuptools banner, no alembic chatter.
    for noise in ("Editable installation", "alembic", "Traceback", "WARNING: Location"):
        assert noise not in first_screen, first_screen
    env = dict(demo["env"])
    ran, synopses, skipped = [], [], {}
    subscriber = None
    try:
        for command in readme_commands(README.read_text()):
            reason = not_run_reason(command)
            if command == "./scripts/demo":
                ran.append(command)  # the fixture ran it
            elif reason is not None:
                skipped[command] = reason
                if command.startswith("mmbroker "):
                    check_synopsis(command)
            elif command.startswith(".venv/bin/twistd"):
                log = open(demo["tmp"] / "subscriber.log", "wb")  # noqa: SIM115 - closed below
                subscriber = (subprocess.Popen(shlex.split(_localize(command, demo)), cwd=REPO,
                                               stdout=log, stderr=subprocess.STDOUT), log)
                time.sleep(4)
                assert subscriber[0].poll() is None, (demo["tmp"] / "subscriber.log").read_text()
                ran.append(command)
            elif command.removeprefix(".venv/bin/").startswith("mmbroker ") and \
                    PLACEHOLDER.search(command.removeprefix(".venv/bin/")):
                check_synopsis(command)
                synopses.append(command)
            else:
                _run(command, demo, env)
                ran.append(command)
        assert subscriber is not None
        # The stock Comet subscriber, started as the README starts it, receives the
        # VOEvent of the trigger the README's curl posted.
        deadline = time.monotonic() + 60
        while b"ARCA-12041-883201" not in (demo["tmp"] / "subscriber.log").read_bytes():
            assert subscriber[0].poll() is None, (demo["tmp"] / "subscriber.log").read_text()
            assert time.monotonic() < deadline, (demo["tmp"] / "subscriber.log").read_text()
            time.sleep(0.5)
    finally:
        if subscriber is not None:
            subscriber[0].terminate()
            subscriber[0].wait(timeout=20)
            subscriber[1].close()
    print(f"ran {len(ran)}, help-checked {len(synopses)}, not run {len(skipped)}:")
    for command, reason in skipped.items():
        print(f"  not run: {command}  -- {reason}")
    assert len(ran) >= 10 and synopses


def _run(command: str, demo: dict[str, Any], env: dict[str, str]) -> None:
    """Run one README command (a `NAME=$(...)` assignment is kept for the next ones)."""
    assignment = re.match(r"^([A-Z_]+)=\$\((.*)\)$", command)
    shell = _localize(assignment.group(2) if assignment else command, demo)
    proc = subprocess.run(["bash", "-c", f"set -euo pipefail; {shell}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, (command, proc.stderr)
    if assignment:
        env[assignment.group(1)] = proc.stdout.strip().splitlines()[-1]
    if "alerts list --role test" in command:
        assert proc.stdout.count("ivo://local.mmbroker/") == 3, proc.stdout
    if "/api/v1/triggers" in command:
        assert '"items"' in proc.stdout, proc.stdout
    if command.endswith("/health"):
        assert '"status"' in proc.stdout
