"""Rewriting env/registry: only the key lines change, every other byte stays."""

import pytest

from quilt_ops.envfile import EnvFile, EnvFileError

OLD_ID, OLD_SECRET = "AKIAOLDOLDOLDOLD0001", "oldSecret/abc+def0123456789oldsecretXYZ"
NEW_ID, NEW_SECRET = "AKIANEWNEWNEWNEW0002", "newSecret/xyz+uvw9876543210newsecretABC"

REAL = f"""# Quilt registry environment
SQLALCHEMY_DATABASE_URI=postgresql://quilt:p%40ss@db.example.com:5432/quilt
REGISTRY_URL=https://registry.example.com
PACKAGE_BUCKET_NAME=quilt-packages

AWS_ACCESS_KEY_ID={OLD_ID}
AWS_SECRET_ACCESS_KEY={OLD_SECRET}
SMTP_PASSWORD=smtp-secret-value
"""

SHAPES = {
    "real": (REAL, REAL.replace(OLD_ID, NEW_ID).replace(OLD_SECRET, NEW_SECRET)),
    "only_legacy_secret": (
        f"A=1\nAWS_ACCESS_KEY_ID={OLD_ID}\nAWS_SECRET_KEY={OLD_SECRET}\nB=2\n",
        f"A=1\nAWS_ACCESS_KEY_ID={NEW_ID}\nAWS_SECRET_KEY={NEW_SECRET}\nB=2\n"),
    "both_names": (
        f"AWS_SECRET_KEY={OLD_SECRET}\nAWS_ACCESS_KEY_ID={OLD_ID}\nAWS_SECRET_ACCESS_KEY={OLD_SECRET}\n",
        f"AWS_SECRET_KEY={NEW_SECRET}\nAWS_ACCESS_KEY_ID={NEW_ID}\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}\n"),
    "crlf": (
        f"# c\r\nA=1\r\nAWS_ACCESS_KEY_ID={OLD_ID}\r\nAWS_SECRET_ACCESS_KEY={OLD_SECRET}\r\n\r\nB=x\r\n",
        f"# c\r\nA=1\r\nAWS_ACCESS_KEY_ID={NEW_ID}\r\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}\r\n\r\nB=x\r\n"),
    "no_final_newline": (
        f"A=1\nAWS_ACCESS_KEY_ID={OLD_ID}\nAWS_SECRET_ACCESS_KEY={OLD_SECRET}",
        f"A=1\nAWS_ACCESS_KEY_ID={NEW_ID}\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}"),
    "comments_next_to_keys": (
        f"# key of RegistryUser, rotated 2019-01-01\nAWS_ACCESS_KEY_ID={OLD_ID}\n#AWS_ACCESS_KEY_ID=AKIAOLDER\n"
        f"  AWS_SECRET_ACCESS_KEY={OLD_SECRET}\n# end of keys\n",
        f"# key of RegistryUser, rotated 2019-01-01\nAWS_ACCESS_KEY_ID={NEW_ID}\n#AWS_ACCESS_KEY_ID=AKIAOLDER\n"
        f"  AWS_SECRET_ACCESS_KEY={NEW_SECRET}\n# end of keys\n"),
    "no_secret_line": (
        f"A=1\nAWS_ACCESS_KEY_ID={OLD_ID}\nB=2\n",
        f"A=1\nAWS_ACCESS_KEY_ID={NEW_ID}\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}\nB=2\n"),
    "no_secret_line_no_final_newline": (
        f"A=1\r\nAWS_ACCESS_KEY_ID={OLD_ID}",
        f"A=1\r\nAWS_ACCESS_KEY_ID={NEW_ID}\r\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}"),
    "odd_bytes_elsewhere": (
        "X=caf\u00e9 \t \nAWS_ACCESS_KEY_ID=" + OLD_ID + "\nAWS_SECRET_ACCESS_KEY=" + OLD_SECRET + "\nY=a=b=c\n",
        "X=caf\u00e9 \t \nAWS_ACCESS_KEY_ID=" + NEW_ID + "\nAWS_SECRET_ACCESS_KEY=" + NEW_SECRET + "\nY=a=b=c\n"),
}


@pytest.mark.parametrize("name", SHAPES)
def test_only_key_lines_change(name):
    before, expected = SHAPES[name]
    env = EnvFile(before.encode())
    env.check_rotatable()
    assert env.key_id == OLD_ID
    assert env.with_key(NEW_ID, NEW_SECRET) == expected.encode()


def test_values_are_read_as_docker_reads_them():
    env = EnvFile(SHAPES["crlf"][0].encode())
    assert env.get("AWS_SECRET_ACCESS_KEY") == OLD_SECRET
    assert env.get("B") == "x"
    assert env.secret_names == ["AWS_SECRET_ACCESS_KEY"]
    env = EnvFile(REAL.encode())
    assert env.get("PACKAGE_BUCKET_NAME") == "quilt-packages"


@pytest.mark.parametrize("content,words", [
    (f"export AWS_ACCESS_KEY_ID={OLD_ID}\n", "export"),
    (f"A=1\nexport B=2\nAWS_ACCESS_KEY_ID={OLD_ID}\n", "line 2: 'export'"),
    (f'AWS_ACCESS_KEY_ID="{OLD_ID}"\n', "quoted"),
    (f"AWS_ACCESS_KEY_ID={OLD_ID}\nAWS_SECRET_ACCESS_KEY='{OLD_SECRET}'\n", "line 2: AWS_SECRET_ACCESS_KEY is quoted"),
    (f"AWS_ACCESS_KEY_ID={OLD_ID} # current key\n", "inline comment"),
    (f"AWS_ACCESS_KEY_ID ={OLD_ID}\n", "space around"),
    ("A=1\n", "no AWS_ACCESS_KEY_ID line"),
    ("AWS_ACCESS_KEY_ID=\n", "no AWS_ACCESS_KEY_ID line"),
    (f"AWS_ACCESS_KEY_ID={OLD_ID}\nAWS_ACCESS_KEY_ID=AKIAOTHER\n", "appears 2 times"),
])
def test_unsafe_files_are_refused_without_values_in_the_message(content, words):
    with pytest.raises(EnvFileError) as e:
        EnvFile(content.encode()).check_rotatable()
    assert words in str(e.value)
    assert OLD_SECRET not in str(e.value) and OLD_ID not in str(e.value)


def test_new_key_with_odd_characters_is_refused():
    with pytest.raises(EnvFileError):
        EnvFile(REAL.encode()).with_key(NEW_ID, "bad\nsecret")
