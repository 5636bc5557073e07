"""create-admin's local checks: the registry's own rules, and where the password comes from."""

import io

import pytest

from quilt_ops.admin import Admin, AdminFailed, InvalidInput, Session, gather, masker, validate
from quilt_ops.config import Settings

GOOD = {"username": "alice", "email": "alice@example.com", "password": "correct horse"}


@pytest.mark.parametrize(
    "username",
    [
        "Alice",
        "1alice",
        "team",
        "public",
        "anonymous",
        "quilt",
        "$(touch /tmp/x)",
        "a;b",
        "a'b",
        'a"b',
        "a\nb",
        "",
        "al ice",
        "a-b",
        "ünï",
    ],
)
def test_invalid_usernames(username):
    with pytest.raises(InvalidInput, match="Invalid username"):
        validate(Admin(username, GOOD["email"], GOOD["password"]))


@pytest.mark.parametrize("email", ["", "alice", "a@", "@b", "a b@c", "a@b@c", "a@b c", "a\n@b"])
def test_invalid_emails(email):
    with pytest.raises(InvalidInput, match="Invalid email"):
        validate(Admin(GOOD["username"], email, GOOD["password"]))


def test_short_password():
    with pytest.raises(InvalidInput, match="at least 8 characters"):
        validate(Admin("alice", "a@b", "1234567"))


def test_password_with_line_break_is_refused():
    with pytest.raises(InvalidInput):
        validate(Admin("alice", "a@b", "12345678\nx"))


@pytest.mark.parametrize("char", ["\x11", "\x13", "\x16", "\x1a", "\x1c", "\x03", "\x04", "\x7f", "\x1b", "\t"])
def test_point_10_16_control_characters_are_refused_locally(char):
    with pytest.raises(InvalidInput, match="control characters"):
        validate(Admin("alice", "a@b", f"good-pass{char}word"))


@pytest.mark.parametrize("username", ["alice", "a", "a_1", "teams", "quilt_ops"])
def test_valid_usernames(username):
    validate(Admin(username, "a@b", "12345678"))


class FakeStdin(io.StringIO):
    def __init__(self, text, tty=False):
        super().__init__(text)
        self.tty = tty

    def isatty(self):
        return self.tty


def test_password_from_stdin():
    admin = gather("alice", "a@b", True, {}, FakeStdin("s3cret-pass\n"))
    assert admin.password == "s3cret-pass"


def test_password_from_environment():
    admin = gather("alice", "a@b", False, {"QUILT_ADMIN_PASSWORD": "env-pass-123"}, FakeStdin(""))
    assert admin.password == "env-pass-123"


def test_no_password_source_without_terminal():
    with pytest.raises(InvalidInput, match="never a command-line option"):
        gather("alice", "a@b", False, {}, FakeStdin(""))


def test_username_required_without_terminal():
    with pytest.raises(InvalidInput, match="--username is required"):
        gather(None, "a@b", False, {"QUILT_ADMIN_PASSWORD": "x" * 8}, FakeStdin(""))


def test_repr_hides_the_password():
    assert "s3cret" not in repr(Admin("alice", "a@b", "s3cret-pass"))


def test_masking_hides_the_password_and_env_values():
    out = "Username: alice\r\nPassword: s3cret-pass\r\nsmtp=smtp-secret-value\r\nError: Invalid email.\r\n"
    mask = masker(Admin("alice", "a@b", "s3cret-pass"), b"SMTP_PASSWORD=smtp-secret-value\n")
    shown = mask(out)
    assert "s3cret" not in shown and "smtp-secret-value" not in shown and "Error: Invalid email." in shown


class FakeProcess:
    """A create_admin run that prints ``script`` pieces as it is answered."""

    def __init__(self, script, code):
        self.script = list(script)
        self.code = code
        self.sent = []
        self.pending = self.script.pop(0) if self.script else b""

    def send(self, data):
        self.sent.append(data)
        if self.script:
            self.pending += self.script.pop(0)

    def read(self, wait):
        out, self.pending = self.pending, b""
        return out, b""

    def finished(self):
        return not self.pending and not self.script and len(self.sent) >= self.answers

    def exit_code(self):
        return self.code

    def close(self):
        pass


class FakeTarget:
    name = "h"

    def __init__(self, process):
        self.process = process

    def start(self, script, timeout, pty=False):
        return self.process


def drive(pieces, code, answers):
    process = FakeProcess(pieces, code)
    process.answers = answers
    session = Session(
        FakeTarget(process),
        Settings(),
        Admin("alice", "a@b", "good-password"),
        5,
        masker(Admin("alice", "a@b", "good-password")),
        "/tmp/quilt-ops-admin.ABCDEFGHIJ",
    )
    return session.run()


def test_success_only_on_success_line():
    assert (
        drive([b"Username: ", b"Email: ", b"Password: ", b"\r\nConfirm password: ", b"\r\nSuccess.\r\n"], 0, 4)
        == "Success."
    )


@pytest.mark.parametrize("code", [0, 2])
def test_point_9_6_an_error_line_is_a_refusal_whatever_the_exit_status(code):
    with pytest.raises(AdminFailed, match="Username already taken"):
        drive(
            [
                b"Username: ",
                b"Email: ",
                b"Password: ",
                b"\r\nConfirm password: ",
                b"\r\nError: Username already taken.\r\n",
            ],
            code,
            4,
        )


def test_point_9_6_a_refusal_right_after_the_password_is_reported_not_waited_on():
    import time

    started = time.monotonic()
    with pytest.raises(AdminFailed, match="at least 8 characters"):
        drive(
            [b"Username: ", b"Email: ", b"Password: ", b"\r\nError: Password must be at least 8 characters long.\r\n"],
            0,
            3,
        )
    assert time.monotonic() - started < 2


def test_exit_zero_without_success_is_a_failure():
    with pytest.raises(AdminFailed, match="without saying Success"):
        drive([b"Username: ", b"Email: ", b"Password: ", b"\r\nConfirm password: ", b"\r\nbye\r\n"], 0, 4)


def test_the_scripts_own_sections_are_not_shown_as_the_programs_output():
    """Given a program that ends early after the script's ``files`` section, the failure
    shows the program's lines only."""
    with pytest.raises(AdminFailed) as caught:
        drive([b"@@quilt-0123456789ab files direct\r\nUsername: ", b"Email: "], 1, 2)
    message = str(caught.value)
    assert "before asking 'Password:'" in message and "Username:" in message
    assert "@@quilt-" not in message and "files direct" not in message
