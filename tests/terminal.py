"""Running a program on a real pseudo-terminal, typing each answer after its prompt (bounded)."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from collections.abc import Mapping, Sequence


def on_terminal(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, answers: Sequence[tuple[str, str]], timeout: float = 60
) -> tuple[int, str]:
    """Runs ``argv`` on a pseudo-terminal in ``cwd``; when the output ends with an answer's
    prompt, types the answer. Returns the exit status and everything printed (CRLF as LF).
    The program is killed if it has not ended within ``timeout`` seconds."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.execve(argv[0], list(argv), dict(env))
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if pending and output.rstrip().endswith(pending[0][0].encode()):
                os.write(fd, pending.pop(0)[1].encode() + b"\n")
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace").replace("\r\n", "\n")
