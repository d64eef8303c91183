"""A throw-away PostgreSQL cluster for tests: initdb into a temp dir, listen on a
free loopback port (and a unix socket in the temp dir), password auth over TCP,
stopped and removed at the end. Debian's package (``apt-get install
postgresql``) provides the binaries; without them the fixture skips."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest


def pg_bin() -> str:
    """The folder of initdb/pg_ctl, or "" if PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return dirs[-1] if dirs and os.path.exists(os.path.join(dirs[-1], "initdb")) else ""


@dataclass
class PgCluster:
    host: str
    port: int
    user: str
    password: str
    database: str = "postgres"

    @property
    def url(self) -> str:
        """A URL without the password (the sources' rule)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.database}"

    def execute(self, *statements: str, rows=None) -> None:
        """Run statements (and executemany ``rows`` for the last one) as the test user."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user,
                             password=self.password, dbname=self.database) as conn:
            with conn.cursor() as cur:
                for i, st in enumerate(statements):
                    if rows is not None and i == len(statements) - 1:
                        cur.executemany(st, rows)
                    else:
                        cur.execute(st)
            conn.commit()


def _as_postgres(cmd: list) -> list:
    if os.geteuid() == 0:          # initdb refuses root
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def start_cluster():
    """Yield a PgCluster; skips (pytest) when PostgreSQL is missing."""
    from testkit import free_port

    bindir = pg_bin()
    if not bindir:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    tmp = tempfile.mkdtemp(prefix="sms-pg-")
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    pw = secrets.token_urlsafe(16)
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as fh:
        fh.write(pw)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    data, port = os.path.join(tmp, "data"), free_port()
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    try:
        subprocess.run(_as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-U", "sms",
                                     f"--pwfile={pwfile}", "--auth-local=trust",
                                     "--auth-host=scram-sha-256", "-E", "UTF8"]), **run)
        subprocess.run(_as_postgres([os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-l",
                                     os.path.join(tmp, "log"), "-o",
                                     f"-p {port} -h 127.0.0.1 -k {tmp}", "start"]), **run)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-500:]}")
    try:
        yield PgCluster("127.0.0.1", port, "sms", pw)
    finally:
        subprocess.run(_as_postgres([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast",
                                     "-w", "stop"]), check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
