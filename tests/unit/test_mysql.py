"""The shell script that runs MySQL programs inside the container: who it logs in as, and
that the password reaches the program only through its environment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from trackerbackup import execute
from trackerbackup.mysql import CREDENTIALS_SCRIPT, FACTS_SCRIPT, NO_CREDENTIALS, NO_TOOLS

TOOL = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('MYSQL_PWD')]))"


def run_script(tmp_path: Path, env: dict[str, str], user: str = "",
               option_file: str = "") -> tuple[list[str], str | None]:
    tool = tmp_path / "tool"
    tool.write_text(f"#!{sys.executable}\n{TOOL}\n")
    tool.chmod(0o755)
    result = execute.run(("sh", "-c", CREDENTIALS_SCRIPT, "sh", str(tool), user, option_file,
                          "--single-transaction", "db"),
                         env={"PATH": os.environ["PATH"], **env})
    argv, password = json.loads(result.stdout)
    return argv, password


def test_root_password_from_the_container_environment(tmp_path: Path) -> None:
    argv, password = run_script(tmp_path, {"MYSQL_ROOT_PASSWORD": "r00t pw'\"",
                                           "MYSQL_USER": "torrust", "MYSQL_PASSWORD": "u"})
    assert argv == ["--user=root", "--single-transaction", "db"]
    assert password == "r00t pw'\""


def test_the_application_user_when_there_is_no_root_password(tmp_path: Path) -> None:
    argv, password = run_script(tmp_path, {"MYSQL_USER": "torrust", "MYSQL_PASSWORD": "u"})
    assert argv[0] == "--user=torrust"
    assert password == "u"


def test_password_files_are_read_inside(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    argv, password = run_script(tmp_path, {"MYSQL_ROOT_PASSWORD_FILE": str(secret)})
    assert argv[0] == "--user=root"
    assert password == "from-file"
    assert "from-file" not in " ".join(argv)


def test_a_password_given_by_trackerbackup_wins(tmp_path: Path) -> None:
    argv, password = run_script(tmp_path, {"MYSQL_PWD": "given", "MYSQL_ROOT_PASSWORD": "r"},
                                user="backup")
    assert argv[0] == "--user=backup"
    assert password == "given"


def test_an_option_file_comes_first_and_brings_its_own_password(tmp_path: Path) -> None:
    argv, password = run_script(tmp_path, {"MYSQL_ROOT_PASSWORD": "r"},
                                option_file="/etc/mysql/backup.cnf")
    assert argv[0] == "--defaults-extra-file=/etc/mysql/backup.cnf"
    assert password is None


def test_no_credentials_is_its_own_exit_status(tmp_path: Path) -> None:
    with pytest.raises(execute.CommandFailed) as caught:
        run_script(tmp_path, {"MYSQL_USER": "torrust"}, user="other")
    assert caught.value.returncode == NO_CREDENTIALS
    assert "no password for user 'other'" in caught.value.stderr_tail


def run_facts(tmp_path: Path, tools: tuple[str, ...]) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in tools:  # each fake program prints its name, argv and password
        (bin_dir / name).write_text(f"#!{sys.executable}\nimport os, sys\n"
                                    f"print('{name}', *sys.argv[1:], os.environ['MYSQL_PWD'])\n")
        (bin_dir / name).chmod(0o755)
    # Only the fake programs on PATH: a host's own mysql client must not be found.
    result = execute.run(("/bin/sh", "-c", FACTS_SCRIPT, "sh", "", ""),
                         env={"PATH": str(bin_dir), "MYSQL_DATABASE": "tracker",
                              "MYSQL_ROOT_PASSWORD": "pw"})
    return result.stdout.decode()


def test_facts_name_the_programs_the_database_and_the_version_in_one_call(
        tmp_path: Path) -> None:
    out = run_facts(tmp_path, ("mysqldump", "mysql"))
    assert out.split("\n")[:3] == ["mysqldump", "mysql", "tracker"]
    assert out.split("\n")[3] == ("mysql --user=root --batch --skip-column-names "
                                  "--execute SELECT VERSION() pw")


def test_facts_without_a_dump_tool_exit_with_their_own_status(tmp_path: Path) -> None:
    with pytest.raises(execute.CommandFailed) as caught:
        run_facts(tmp_path, ("mariadb",))
    assert NO_TOOLS[caught.value.returncode] == ("mariadb-dump", "mysqldump")
    assert "none of mariadb-dump mysqldump" in caught.value.stderr_tail
