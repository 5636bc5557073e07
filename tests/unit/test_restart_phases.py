"""What an interrupted restart says depends on whether the removal had started.

Given a target whose first or second remote command is cut (lost connection, Ctrl-C),
expect the exception that tells the task "nothing was removed" only for the first (the
pre-checks), and the "removing" step shown only once the pre-checks passed.
"""

import pytest

from quilt_ops import restart
from quilt_ops.config import Settings
from quilt_ops.errors import ConnectionLost, RemoteTimeout
from quilt_ops.remote import RemoteResult
from quilt_ops.reporting import Recorder
from quilt_ops.stopping import Stopped

ENV = b"AWS_ACCESS_KEY_ID=AKIAEXAMPLEEXAMPLE12\nAWS_SECRET_ACCESS_KEY=secret\n"


class CutTarget:
    """Answers the pre-check as a healthy host would, and fails command number ``cut_at``."""

    name = "h1"
    sudo = "sudo -n"

    def __init__(self, cut_at: int, failure: BaseException) -> None:
        self.cut_at, self.failure, self.commands = cut_at, failure, 0

    def run(self, script: str, **_: object) -> RemoteResult:
        self.commands += 1
        if self.commands == self.cut_at:
            raise self.failure
        marker = script.split("m=", 1)[1].split("\n", 1)[0].strip("'")
        say = lambda *words: f"{marker} {' '.join(words)}\n".encode()  # noqa: E731
        out = say("docker", "direct") + say("files", "direct")
        if self.commands == 1:
            out += say("blob", "env", str(len(ENV))) + ENV + b"\n" + say("blobend", "env") + say("ready")
        else:
            out += say("removing") + say("script") + say("scriptexit", "0")
        return RemoteResult(out, "", 0, "sh", 0.01)


@pytest.mark.parametrize(
    "cut_at,failure,expected,removing_shown",
    [
        (1, ConnectionLost("lost the SSH connection to h1"), restart.LostBeforeRemoval, False),
        (1, KeyboardInterrupt(), restart.StoppedBeforeRemoval, False),
        (1, Stopped(), restart.StoppedBeforeRemoval, False),
        (2, ConnectionLost("lost the SSH connection to h1"), ConnectionLost, True),
        (2, KeyboardInterrupt(), KeyboardInterrupt, True),
    ],
)
def test_an_interruption_says_whether_the_removal_started(cut_at, failure, expected, removing_shown):
    target, reporter = CutTarget(cut_at, failure), Recorder()
    with pytest.raises(BaseException) as caught:
        restart.recreate(target, Settings(), reporter, timeout=30)  # type: ignore[arg-type]
    assert type(caught.value) is expected
    # Both still are what callers (the rotation) already handle.
    assert isinstance(caught.value, ConnectionLost if isinstance(failure, ConnectionLost) else KeyboardInterrupt)
    assert any(line.startswith("removing") for line in reporter.lines) is removing_shown


def test_a_restart_that_is_not_cut_runs_two_commands():
    target = CutTarget(0, RuntimeError("never"))
    seconds, _ = restart.recreate(target, Settings(), Recorder(), timeout=30)  # type: ignore[arg-type]
    assert target.commands == 2 and seconds >= 0


@pytest.mark.parametrize("cut_at,expected", [(1, restart.NothingChanged), (2, restart.RestartError)])
def test_a_timeout_says_whether_the_start_script_ran(cut_at, expected):
    target = CutTarget(cut_at, RemoteTimeout("gave up"))
    with pytest.raises(restart.RestartError) as caught:
        restart.recreate(target, Settings(), Recorder(), timeout=30)  # type: ignore[arg-type]
    assert type(caught.value) is expected
    assert ("pre-checks" in str(caught.value)) is (cut_at == 1)
