"""sql-dl serve's LDAP login against a real directory (OpenLDAP's slapd, from Debian's packages,
which .ci/setup installs), with TLS, on a non-loopback address in a network namespace, and
its audit log."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from helpers.processes import answer, beeline, doc_blocks, free_port, Server, write_manifest

from sql_dl.cli.access import SETTABLE

BASE_DN = "ou=people,dc=example,dc=com"  # the manual's, so its commands run unchanged
PASSWORDS = {"alice": "alice-Pa55-word", "bob": "bob-Pa55-word", "carol": "carol-Pa55-word",
             "dave": "dave-Pa55-word"}  # dave: only the throttling test logs in as him
GROUPS = {"ml-team": ["alice"], "admins": ["carol"]}  # under ou=groups,dc=example,dc=com
ACCESS = {"admins": ["group:admins"], "grants": {"cnn": ["group:ml-team"]}}
REFUSED = "Error validating the login"


def sbin(name: str) -> str:
    """A system command's path, also where /usr/sbin is not on PATH (slapd, ip)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


SLAPD, SLAPADD, SLAPPASSWD, IP = (sbin(n) for n in ("slapd", "slapadd", "slappasswd", "ip"))

pytestmark = [
    pytest.mark.slow,  # servers with a directory of their own, one per recipe
    pytest.mark.skipif(not Path(SLAPD).exists() or shutil.which("ldapwhoami") is None,
                       reason="OpenLDAP's slapd and ldap-utils are not installed (bash .ci/setup-tests "
                              "installs them)")]


def start_slapd(directory: Path, host: str, port: int,
                prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """slapd serving ``BASE_DN`` with the users of `PASSWORDS` on ldap://host:port, from its
    own directory, once a user can bind."""
    (directory / "db").mkdir(parents=True)
    conf = directory / "slapd.conf"
    conf.write_text("\n".join([
        *(f"include /etc/ldap/schema/{name}.schema"
          for name in ("core", "cosine", "inetorgperson")),
        f"pidfile {directory / 'slapd.pid'}",
        "modulepath /usr/lib/ldap", "moduleload back_mdb",
        "database mdb", "maxsize 10485760", 'suffix "dc=example,dc=com"',
        f"directory {directory / 'db'}", ""]))
    entries = ["dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\n"
               "o: example\ndc: example",
               f"dn: {BASE_DN}\nobjectClass: organizationalUnit\nou: people"]
    for user, password in PASSWORDS.items():
        hashed = subprocess.run([SLAPPASSWD, "-s", password], capture_output=True, text=True,
                                check=True).stdout.strip()
        entries.append(f"dn: uid={user},{BASE_DN}\nobjectClass: inetOrgPerson\nuid: {user}\n"
                       f"cn: {user}\nsn: {user}\nuserPassword: {hashed}")
    entries.append("dn: ou=groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: groups")
    for group, members in GROUPS.items():
        entries.append(f"dn: cn={group},ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\n"
                       f"cn: {group}\n" + "".join(f"member: uid={m},{BASE_DN}\n" for m in members))
    (directory / "users.ldif").write_text("\n\n".join(entries) + "\n")
    subprocess.run([SLAPADD, "-f", conf, "-l", directory / "users.ldif"], check=True,
                   capture_output=True)
    url = f"ldap://{host}:{port}"
    process = subprocess.Popen([*prefix, SLAPD, "-f", conf, "-h", f"{url}/", "-d", "0"],
                               stdout=open(directory / "slapd.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while subprocess.run([*prefix, "ldapwhoami", "-x", "-H", url, "-D", f"uid=alice,{BASE_DN}",
                          "-w", PASSWORDS["alice"]], capture_output=True).returncode:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"slapd did not start: {(directory / 'slapd.log').read_text()}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def ldap_port(tmp_path_factory):
    port = free_port()
    process = start_slapd(tmp_path_factory.mktemp("slapd"), "127.0.0.1", port)
    yield port
    stop(process)


def readme_server_words(ldap: str, manifest: Path) -> list[str]:
    """The manual's LDAP server command, for the directory at ``ldap`` (host:port)."""
    serve = doc_blocks("**LDAP, step by step**", 1)[0]
    words = shlex.split(serve.replace("\\\n", " ").replace("ldap.example.com:389", ldap))
    assert words[:4] == ["sql-dl", "serve", "--manifest", "conf/models.yaml"]
    return [*words[4:]]


@pytest.fixture(scope="module")
def server(tmp_path_factory, photos_dir, cnn_file, labels_file, ldap_port):
    """The manual's LDAP server, its audit log rotated at 2 kB, with `ACCESS`'s grants."""
    work = tmp_path_factory.mktemp("ldap_serve")
    manifest = write_manifest(work / "models.yaml", photos_dir, cnn_file, labels_file,
                              access=ACCESS)
    words = readme_server_words(f"127.0.0.1:{ldap_port}", manifest)
    server = Server(manifest, work / "home", *words, "--audit-log-max-size", "2k",
                    "--audit-log-backups", "50", cwd=work)
    server.url = server.wait_ready()
    server.audit = work / "audit" / "sql_dl.jsonl"
    yield server
    if server.process.poll() is None:
        server.stop()


def views_only(path: Path, photos_dir: Path) -> Path:
    """A manifest with the photos view and no model: a server without TensorFlow starts
    sooner, and logins and counts need no model."""
    path.write_text(yaml.safe_dump({"images": {"photos": {"path": str(photos_dir)}}}))
    return path


def connect(port: int, user: str, password: str, host: str = "127.0.0.1"):
    from pyhive import hive

    return hive.connect(host=host, port=port, username=user, password=password, auth="LDAP")


def refusal(port: int, user: str, password: str, host: str = "127.0.0.1") -> str:
    """What PyHive raises for a login the server refuses."""
    from thrift.transport.TTransport import TTransportException

    with pytest.raises(TTransportException) as raised:
        connect(port, user, password, host)
    return str(raised.value)


def run_readme_clients(jdbc: str, pyhive: str, port: int, photos: list[Path],
                       cwd: Path | None = None, prelude: str = "") -> None:
    """Runs a beeline block of the manual as alice and a PyHive block as bob against the
    server on ``port`` (``photos`` for ``digits``); each must count the photos."""
    import pyspark

    beeline_path = str(Path(pyspark.__file__).parent / "bin" / "beeline")
    command = (jdbc.replace("$B", beeline_path).replace("10000", str(port))
               .replace("digits", "photos"))
    result = subprocess.run(["bash", "-euc", prelude + command], cwd=cwd, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "LDAP_PASSWORD": PASSWORDS["alice"]})
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^\|\s*{len(photos)}\s*\|$", result.stdout, re.M), result.stdout

    script = (pyhive.replace("10000", str(port)).replace("digits", "photos")
              .replace('username="alice"', 'username="bob"'))
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "LDAP_PASSWORD": PASSWORDS["bob"]})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"[({len(photos)},)]\n"


def test_readme_ldap_recipe_lets_both_users_in(server, photos):
    jdbc, pyhive = doc_blocks("**LDAP, step by step**", 3)[1:]
    run_readme_clients(jdbc, pyhive, server.port, photos)

    log = _wait_for_log(server, r"sql-dl: query \S+ by user bob: SELECT count\(\*\) FROM photos")
    assert re.search(r"sql-dl: query \S+ by user alice: SELECT count\(\*\) FROM photos", log)


def _wait_for_log(server: Server, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = Path(server.log.name).read_text()
        if re.search(pattern, log) or time.monotonic() > deadline:
            assert re.search(pattern, log), log[-3000:]
            return log
        time.sleep(0.5)


def test_wrong_unknown_and_empty_passwords_are_refused(server):
    wrong = ("alice", PASSWORDS["bob"])
    for user, password in (wrong, ("mallory", PASSWORDS["alice"]), ("alice", "")):
        assert refusal(server.port, user, password) == f"Bad status: 3 (b'{REFUSED}')"
        result = beeline(server.url, "SELECT 1", "-n", user, "-p", password)
        assert result.returncode != 0 and result.rows == []
        assert (f"Could not open client transport with JDBC Uri: {server.url}: Peer indicated "
                f"failure: {REFUSED}") in result.stderr, result.stderr
    log = Path(server.log.name).read_text()
    assert "by user mallory" not in log
    assert log.count("SASL negotiation failure") >= 6


def test_the_session_user_is_the_one_the_directory_authenticated(server):
    """A client authenticating as alice but asking to act as bob (the SASL authorization id)
    runs as alice."""
    import thrift_sasl
    from pyhive import hive
    from pyhive.sasl_compat import PureSASLClient
    from thrift.transport.TSocket import TSocket

    sasl = lambda: PureSASLClient(host="127.0.0.1", username="alice",  # noqa: E731
                                  password=PASSWORDS["alice"], authorization_id="bob")
    transport = thrift_sasl.TSaslClientTransport(sasl, "PLAIN", TSocket("127.0.0.1", server.port))
    cursor = hive.connect(thrift_transport=transport).cursor()
    cursor.execute("SELECT current_user() AS sql_dl_who")
    assert cursor.fetchall() == [("alice",)]
    cursor.close()
    _wait_for_log(server, r"by user alice: SELECT current_user\(\) AS sql_dl_who")


def test_group_grants_admins_and_canonical_names(server, photos):
    """Grants to LDAP groups of the directory (alice is in ml-team, to which cnn is granted;
    carol is in admins); user names are canonical whatever the client typed."""
    def run(user: str, sql: str) -> list[tuple]:
        return answer(connect(server.port, user, PASSWORDS[user.strip().lower()]), sql)

    from pyhive.exc import OperationalError

    model = "SELECT count(cnn(image)), current_user() FROM photos"
    assert run(" ALICE ", model) == [(len(photos), "alice")]
    with pytest.raises(OperationalError) as raised:
        run("bob", model)
    assert raised.value.args[0].status.errorMessage == (
        "Error running query: AccessDenied: function cnn (of cnn) is granted to group:ml-team "
        "only. Received: user=bob")
    assert run("bob", "SELECT count(*) FROM photos") == [(len(photos),)]  # open to all
    run("carol", "CREATE DATABASE IF NOT EXISTS carols")  # an admin, through her group
    assert ("carols",) in run("carol", "SHOW DATABASES")
    run("carol", "DROP DATABASE carols")
    # sql-dl serve's default settings hold admins too: Spark's restricted mode is on
    with pytest.raises(OperationalError, match="RESTRICTED_MODE"):
        run("carol", "SELECT TRANSFORM('x') USING 'id' AS (o STRING)")
    log = _wait_for_log(server, r"by user alice: SELECT count\(cnn\(image\)\)")
    assert "by user  ALICE" not in log


def test_bi_metadata_calls_of_the_hive_jdbc_driver_as_an_analyst(server, tmp_path):
    """beeline's metadata commands, which call the Hive JDBC driver's DatabaseMetaData
    (getSchemas, getTables, getColumns, getFunctions), as alice, an LDAP analyst."""
    import pyspark

    script = tmp_path / "metadata.sql"
    script.write_text("!metadata getSchemas\n!tables\n!columns photos\n"
                      '!metadata getFunctions "" "default" "cnn%"\n')
    result = subprocess.run(
        [str(Path(pyspark.__file__).parent / "bin" / "beeline"), "-u", server.url, "-n", "alice",
         "-p", PASSWORDS["alice"], "--outputformat=tsv2", "-f", str(script)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "AccessDenied" not in result.stdout + result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert ["default", ""] in [r[-2:] for r in rows if len(r) == 2]  # getSchemas
    assert ["", "default", "photos", "VIEW"] in [r[:4] for r in rows]  # getTables
    assert [r[3] for r in rows if r[1:3] == ["default", "photos"] and len(r) > 10] == [
        "path", "label", "image", "length", "modification_time"]  # getColumns
    assert {r[2] for r in rows if len(r) == 6 and r[2].startswith("cnn")} == {
        "cnn", "cnn_features", "cnn_top_k"}  # getFunctions


def test_refused_logins_are_audited_and_throttled(server):
    """Each refused login is an audit line with the name as typed, the address and the time;
    after five failures within a minute the user is refused without asking the directory,
    even with the right password, while other users still log in."""
    typed = ["dave", " Dave", "DAVE", "dave", "dave"]
    for name in typed:
        assert refusal(server.port, name, "wrong") == f"Bad status: 3 (b'{REFUSED}')"
    started = time.monotonic()
    assert refusal(server.port, "dave", PASSWORDS["dave"]) == f"Bad status: 3 (b'{REFUSED}')"
    assert time.monotonic() - started < 2
    assert answer(connect(server.port, "alice", PASSWORDS["alice"]), "SELECT 1") == [(1,)]

    deadline = time.monotonic() + 20
    while True:
        lines = [line for line in audit_lines(server.audit)
                 if line["outcome"] == "login_failed" and line["user"].strip().lower() == "dave"]
        if len(lines) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [line["user"] for line in lines] == [*typed, "dave"]
    assert {line["client"] for line in lines} == {"127.0.0.1"}
    assert [line["error"] for line in lines] == ["wrong password or unknown user"] * 5 + [
        "throttled: too many failed logins of this user or from this address in the last "
        "minute"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
               for line in lines)
    assert all(line["statement"] is None for line in lines)
    log = _wait_for_log(server, r"login refused for user 'dave' from 127\.0\.0\.1: throttled")
    assert "login refused for user ' Dave' from 127.0.0.1: wrong password" in log
    for password in PASSWORDS.values():
        assert password not in log


def audit_lines(path: Path) -> list[dict]:
    """Every line of the audit log and its rotated files, oldest first."""
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [json.loads(line) for f in [*files, path] for line in f.read_text().splitlines()]


def wait_for_audit(path: Path, statements: set[str], timeout: float = 30) -> list[dict]:
    """The audit log's lines once it has an end line for each of ``statements`` (or after
    ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = audit_lines(path) if path.exists() else []
        ended = {line["statement"] for line in lines if line["outcome"] != "started"}
        if statements <= ended or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def test_audit_log_has_each_statement_once_rotated_and_without_secrets(server, photos, cnn_file):
    from pyhive import hive  # noqa: F401 - the connection below needs it

    marker = uuid.uuid4().hex[:8]
    secrets = {"SET": f"AKIA-{marker}-s3-secret", "URL": f"pg-{marker}-secret",
               "raised": f"tok-{marker}-secret"}
    statements = {
        "model": f"SELECT path, cnn_top_k(image, 1)[0].description, '{marker}' FROM photos",
        "set": f"SET spark.hadoop.fs.s3a.secret.key={secrets['SET']}",
        "jdbc": (f"CREATE TEMPORARY VIEW v_{marker} USING jdbc OPTIONS (url "
                 f"'jdbc:postgresql://db.invalid/x?user=u&password={secrets['URL']}', dbtable "
                 f"'t', password '{secrets['URL']}')"),
        "raised": f"SELECT raise_error('access token={secrets['raised']}')",
        "unresolved": f"SELECT nope_{marker} FROM photos",
        "arguments": f"SELECT cnn_top_k(image, 'three'), '{marker}' FROM photos",
        "worker": f"SELECT cnn_top_k(image, -size(array(1))), '{marker}' FROM photos",
    }
    connection = connect(server.port, "alice", PASSWORDS["alice"])
    cursor = connection.cursor()
    for key, sql in statements.items():
        try:
            cursor.execute(sql)
            cursor.fetchall()
        except Exception:  # noqa: BLE001 - set, jdbc, raised and unresolved fail, as meant
            assert key in ("set", "jdbc", "raised", "unresolved", "arguments", "worker")
    for i in range(12):  # enough lines for several 2-kB files
        cursor.execute(f"SELECT {i} AS n, '{marker}' AS m")
        cursor.fetchall()
    cursor.close()
    connection.close()

    redacted = "*********(redacted)"
    expected = [statements["model"], f"SET spark.hadoop.fs.s3a.secret.key={redacted}",
                statements["jdbc"].replace(secrets["URL"], redacted),
                f"SELECT raise_error('access token={redacted}')", statements["unresolved"],
                statements["arguments"], statements["worker"],
                *(f"SELECT {i} AS n, '{marker}' AS m" for i in range(12))]
    lines = wait_for_audit(server.audit, set(expected))
    started = [line for line in lines if line["statement"] in expected
               and line["outcome"] == "started"]
    ours = [line for line in lines if line["statement"] in expected
            and line["outcome"] != "started"]
    assert sorted(line["statement"] for line in ours) == sorted(expected)  # each once
    assert len({line["statement_id"] for line in ours}) == len(expected)
    # each also has its line from before it ran, earlier in the file, with the same id
    assert sorted(line["statement"] for line in started) == sorted(expected)
    position = {(line["statement_id"], line["outcome"] == "started"): i
                for i, line in enumerate(lines)}
    assert all(position[(line["statement_id"], True)] < position[(line["statement_id"], False)]
               for line in ours)
    assert {line["user"] for line in started} == {"alice"}
    by_text = {line["statement"]: line for line in ours}

    model = by_text[statements["model"]]
    assert model["user"] == "alice" and model["client"] == "127.0.0.1"
    assert model["rows"] == len(photos) and model["outcome"] == "success"
    assert model["images_scored"] + model["images_from_cache"] == len(photos)
    assert model["duration_ms"] > 0 and model["error"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", model["time"])
    assert set(model) == {"time", "user", "client", "statement", "duration_ms", "rows",
                          "images_scored", "images_from_cache", "outcome", "error", "rule",
                          "statement_id"}
    setting = by_text[f"SET spark.hadoop.fs.s3a.secret.key={redacted}"]  # analysts may not
    assert (setting["outcome"], setting["rule"]) == ("denied", (
        "SET spark.hadoop.fs.s3a.secret.key changes a setting of the server (analysts may set "
        f"{', '.join(SETTABLE)}); only admins may"))
    jdbc = by_text[expected[2]]
    assert (jdbc["outcome"], jdbc["error"]) == ("denied", "AccessDenied: CREATE VIEW ... USING "
                                                "reads files by path; only admins may. "
                                                "Received: user=alice")
    raised = by_text[expected[3]]
    assert raised["outcome"] == "error"
    assert raised["error"] == f"[USER_RAISED_EXCEPTION] access token={redacted} SQLSTATE: P0001"
    unresolved = by_text[statements["unresolved"]]
    assert unresolved["outcome"] == "error" and unresolved["rows"] == 0
    assert unresolved["error"].startswith("[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column")
    assert "\n" not in unresolved["error"]  # the message, not Spark's plan
    arguments = by_text[statements["arguments"]]  # refused at analysis: no image was scored
    assert (arguments["outcome"], arguments["images_scored"]) == ("error", 0)
    assert arguments["error"].startswith(
        "cnn_top_k(image, k): k must be an INT. Received: k STRING 'three'")
    worker = by_text[statements["worker"]]  # a Python worker's error: its line, not a traceback
    assert (worker["outcome"], worker["error"]) == ("error", (
        "FunctionArgumentError: cnn_top_k(x, k): k must be 0 or more (0 gives an empty array). "
        "Received: k=-1"))
    assert [by_text[f"SELECT {i} AS n, '{marker}' AS m"]["rows"] for i in range(12)] == [1] * 12

    files = [server.audit, *server.audit.parent.glob(server.audit.name + ".*")]
    assert len(files) >= 3 and all(f.stat().st_size <= 2048 for f in files)
    assert all(f.stat().st_mode & 0o777 == 0o640 for f in files)
    text = "\n".join(f.read_text() for f in files)
    log = Path(server.log.name).read_text()
    for secret in [*secrets.values(), *PASSWORDS.values()]:
        assert secret not in text
        assert not re.search(rf"sql-dl: .*{secret}", log)  # sql_dl's query log lines


def test_readme_tls_recipe(tmp_path, photos_dir, ldap_port, photos):
    """The manual's TLS commands, as written: keystore, the LDAP server with it, beeline and
    PyHive; a plain client and a wrong password are refused; no password reaches a log."""
    keys, serve, jdbc, pyhive = doc_blocks("**TLS, step by step**", 4)
    made = subprocess.run(["bash", "-euc", keys], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"server.p12", "server.crt", "trust.p12"}
    password = re.search(r"^STOREPASS=(\S+)$", keys, re.M).group(1)
    words = shlex.split(serve.replace("\\\n", " ").replace('"$STOREPASS"', password)
                        .replace("ldap.example.com:389", f"127.0.0.1:{ldap_port}"))
    assert words[:4] == ["sql-dl", "serve", "--manifest", "conf/models.yaml"]
    manifest = views_only(tmp_path / "models.yaml", photos_dir)
    server = Server(manifest, tmp_path / "home", *words[4:], "--audit-log", "audit.jsonl",
                    cwd=tmp_path)
    try:
        url = server.wait_ready()
        assert url == f"jdbc:hive2://127.0.0.1:{server.port}/;ssl=true"
        run_readme_clients(jdbc, pyhive, server.port, photos, cwd=tmp_path,
                           prelude=f"STOREPASS={password}\n")

        trusted = f"{url};sslTrustStore={tmp_path / 'trust.p12'};trustStorePassword={password}"
        wrong = beeline(trusted, "SELECT 1", "-n", "alice", "-p", PASSWORDS["bob"])
        assert wrong.returncode != 0 and wrong.rows == []
        assert f"Peer indicated failure: {REFUSED}" in wrong.stderr
        plain = beeline(f"jdbc:hive2://127.0.0.1:{server.port}/", "SELECT 1", "-n", "alice",
                        "-p", PASSWORDS["alice"])
        assert plain.returncode != 0 and plain.rows == []
        _wait_for_log(server, r"by user bob: SELECT count\(\*\) FROM photos")
    finally:
        code, _ = server.stop()
    assert code == 0
    log = Path(server.log.name).read_text()
    assert re.search(r"sql-dl: query \S+ by user alice: SELECT count\(\*\) FROM photos", log)
    audit = tmp_path / "audit.jsonl"
    assert sorted((line["user"], line["outcome"]) for line in audit_lines(audit)
                  if line["statement"] == "SELECT count(*) FROM photos") == [
        ("alice", "started"), ("alice", "success"), ("bob", "started"), ("bob", "success")]
    everything = "\n".join([audit.read_text(), log, *server.lines])
    assert not any(p in everything for p in [password, *PASSWORDS.values()])
    assert "SSLHandshakeException" not in log  # the readiness check does not connect
    errors = {re.sub(r"^\S+ \S+ ERROR ", "", line) for line in log.splitlines()
              if " ERROR " in line}
    assert errors == {"TThreadPoolServer: Error occurred during processing of message.",
                      "TSaslTransport: SASL negotiation failure"}  # the two refused clients
    assert "Unsupported or unrecognized SSL message" in log  # the plain client's attempt


class Namespace:
    """A network namespace with a veth link to this one: this side ``host_ip``, the
    namespace's side ``ns_ip``; ``prefix`` runs a command inside it."""

    def __init__(self):
        tag = f"{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
        self.name = f"sqldl{tag}"
        self.outer, self.inner = f"sqo{tag}", f"sqi{tag}"
        octets = uuid.uuid4().bytes  # a random /30 in 10.200.0.0-10.249.255.255
        link = ipaddress.ip_network(f"10.{200 + octets[0] % 50}.{octets[1]}.{octets[2] & 0xFC}/30")
        self.host_ip, self.ns_ip = (str(address) for address in link.hosts())
        self.prefix = (IP, "netns", "exec", self.name)
        self.made = False

    def create(self) -> None:
        """Raises `OSError` with ``ip``'s message when namespaces are not available."""
        self._run(IP, "netns", "add", self.name)
        self.made = True
        self._run(IP, "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        self._run(IP, "link", "set", self.inner, "netns", self.name)
        self._run(IP, "addr", "add", f"{self.host_ip}/30", "dev", self.outer)
        self._run(IP, "link", "set", self.outer, "up")
        self._run(*self.prefix, IP, "addr", "add", f"{self.ns_ip}/30", "dev", self.inner)
        self._run(*self.prefix, IP, "link", "set", self.inner, "up")
        self._run(*self.prefix, IP, "link", "set", "lo", "up")

    def delete(self) -> None:
        if self.made:  # takes the veth pair with it
            subprocess.run([IP, "netns", "del", self.name], capture_output=True)

    @staticmethod
    def _run(*command: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise OSError(f"{' '.join(command)}: {result.stderr.strip()}")


@pytest.fixture
def namespace():
    if not Path(IP).exists():
        pytest.skip("network namespaces: the ip command (Debian's iproute2) is not installed")
    space = Namespace()
    try:
        space.create()
    except OSError as e:
        space.delete()
        print(f"network namespaces are not available here: {e}")
        pytest.skip(f"network namespaces are not available here: {e}")
    yield space
    space.delete()


def test_non_loopback_bind_with_ldap_in_a_network_namespace(namespace, tmp_path, photos_dir,
                                                            photos):
    """The server listens on the namespace's veth address, its directory inside the namespace
    too; clients reach it from this side of the link."""
    manifest = views_only(tmp_path / "models.yaml", photos_dir)
    refused = subprocess.run(
        [*namespace.prefix, sys.executable, "-m", "sql_dl.cli", "serve", "--manifest",
         str(manifest), "--host", namespace.ns_ip, "--home", str(tmp_path / "refused")],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert (f"Error: refusing to listen on {namespace.ns_ip} ({namespace.ns_ip}), which is not a "
            "loopback address, without authentication") in refused.stderr

    ldap_port = free_port()
    slapd = start_slapd(tmp_path / "slapd", "127.0.0.1", ldap_port, namespace.prefix)
    words = readme_server_words(f"127.0.0.1:{ldap_port}", manifest)
    server = Server(manifest, tmp_path / "home", *words, "--host", namespace.ns_ip,
                    cwd=tmp_path, prefix=namespace.prefix)
    try:
        url = server.wait_ready()
        assert url == f"jdbc:hive2://{namespace.ns_ip}:{server.port}/"
        cursor = connect(server.port, "bob", PASSWORDS["bob"], host=namespace.ns_ip).cursor()
        cursor.execute("SELECT count(*) FROM photos")
        assert cursor.fetchall() == [(len(photos),)]
        cursor.close()
        assert REFUSED in refusal(server.port, "bob", PASSWORDS["alice"], host=namespace.ns_ip)
        log = _wait_for_log(server, r"by user bob: SELECT count\(\*\) FROM photos")
        assert (f"hive.server2.authentication=LDAP on {namespace.ns_ip} without "
                "hive.server2.use.SSL=true: clients send their passwords in clear text") in log
    finally:
        code, _ = server.stop()
        stop(slapd)
    assert code == 0
    audit = audit_lines(tmp_path / "audit" / "sql_dl.jsonl")
    assert [(line["user"], line["client"], line["outcome"]) for line in audit
            if line["statement"] == "SELECT count(*) FROM photos"] == [
        ("bob", namespace.host_ip, "started"), ("bob", namespace.host_ip, "success")]
