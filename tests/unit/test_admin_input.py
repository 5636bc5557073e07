"""create-admin's local checks: the registry's own rules, and where the password comes from."""

import io

import pytest

from quilt_ops.admin import Admin, InvalidInput, gather, mask, tail, validate

GOOD = dict(username="alice", email="alice@example.com", password="correct horse")


@pytest.mark.parametrize("username", ["Alice", "1alice", "team", "public", "anonymous", "quilt", "$(touch /tmp/x)",
                                      "a;b", "a'b", 'a"b', "a\nb", "", "al ice", "a-b", "ünï"])
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


def test_mask_and_tail():
    out = "Username: alice\r\nPassword: s3cret-pass\r\nError: Invalid email.\r\n"
    assert "s3cret" not in mask(out, "s3cret-pass")
    assert tail(out, "s3cret-pass").endswith("Error: Invalid email.")
    assert "s3cret" not in tail(out, "s3cret-pass")
