"""Config loading: every problem at its line, secrets, the default, the reference."""

from __future__ import annotations

import os
import pickle
import stat
import sys
import textwrap
import types
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from mosaic import providers
from mosaic.config import schema
from mosaic.config.default import default_config
from mosaic.config.docs import render_reference
from mosaic.config.holder import redacted_dump
from mosaic.config.loader import ConfigError, Problem, load_config

REPO = Path(__file__).resolve().parent.parent
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
HASH = CHEAP.hash("correct horse")
SECRET_TOKEN = "tok-5ecr3t-v4lue"


def write(tmp_path: Path, text: str, name: str = "mosaic.yaml") -> Path:
    """Write a config whose first line is line 1 of ``text`` after dedent."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def where(path: Path) -> list[tuple[int, str]]:
    return [(p.line, p.key) for p in problems_of(path)]


def tenant_yaml(body: str = "", tenant: str = "acme") -> str:
    """A valid one-tenant config; ``body`` is added to the tenant from line 7 on."""
    head = (f"tenants:\n  {tenant}:\n    root:\n      type: memory\n"
            f'    users: {{bob: {{password_hash: "{HASH}", groups: [staff]}}}}\n'
            "    groups: [staff]\n")
    return head + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "    ")


@pytest.fixture
def secret_provider(monkeypatch: pytest.MonkeyPatch) -> str:
    """A provider with a secret option whose validator echoes bad values (careless)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        bucket: str
        token: SecretStr

        @field_validator("token")
        @classmethod
        def _shape(cls, value: SecretStr) -> SecretStr:
            if not value.get_secret_value().startswith("tok-"):
                raise ValueError(f"token {value.get_secret_value()} must start with tok-")
            return value

    module = types.ModuleType("mosaic_test_vault")
    module.Options = Options  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mosaic_test_vault", module)
    monkeypatch.setitem(providers.REGISTRY, "vault", ("mosaic_test_vault", None))
    return "vault"


# --- the examples -----------------------------------------------------------------------------

@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    admin_hash = CHEAP.hash("initech admin")
    (tmp_path / "initech-admin.hash").write_text(admin_hash + "\n")
    monkeypatch.setenv("MOSAIC_SECRETS", str(tmp_path))
    monkeypatch.setenv("MOSAIC_BOB_HASH", HASH)
    return admin_hash


@pytest.mark.parametrize(("name", "tenants"), [
    ("single-tenant.yaml", ["office"]),
    ("msp.yaml", ["acme", "globex", "initech"]),
])
def test_examples_load(example_env: str, name: str, tenants: list[str]) -> None:
    config = load_config(REPO / "config" / name)
    assert list(config.tenants) == tenants


def test_examples_cover_env_file_per_user_and_read_only(example_env: str) -> None:
    single = load_config(REPO / "config" / "single-tenant.yaml")
    assert single.tenants["office"].users["bob"].password_hash.get_secret_value() == HASH
    msp = load_config(REPO / "config" / "msp.yaml")
    initech = msp.tenants["initech"]
    assert initech.users["admin"].password_hash.get_secret_value() == example_env
    assert "{user}" in msp.tenants["acme"].mounts["/home"].provider.model_extra["root"]
    assert initech.mounts["/reports/tps"].read_only


# --- precise problems -------------------------------------------------------------------------

def test_every_problem_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        server:
          listen: nowhere
          threads: many
        tenants:
          acme:
            root: {{type: memory}}
            mounts:
              /data/:
                provider: {{type: memory}}
            users:
              bob:
                password_hash: "{HASH}"
                groups: [staff, ghosts]
            groups: [staff]
            permissions:
              /:
                "@auditors": read
          Globex:
            root: {{type: memory}}
        """)
    assert where(path) == [
        (2, "server.listen"),
        (3, "server.threads"),
        (8, "tenants.acme.mounts./data/"),
        (13, "tenants.acme.users.bob.groups[1]"),
        (17, "tenants.acme.permissions./.@auditors"),
        (18, "tenants.Globex"),
    ]


def test_str_is_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, """
        server:
          threads: many
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:1:1: tenants: missing required key 'tenants'",
        f"{path}:2:12: server.threads: Input should be a valid integer, unable to parse string "
        "as an integer (got a string)",
    ]


def test_config_error_survives_pickling(tmp_path: Path) -> None:
    # Worker processes hand errors to the supervisor.
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "server:\n  threads: many\ntenants: {}\n"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.problems == caught.value.problems and str(copy) == str(caught.value)


@pytest.mark.parametrize(("text", "line", "key", "expected"), [
    ("servre: {}\ntenants: {}\n", 1, "servre", "(did you mean 'server'?); expected one of: "
     "server, tenants"),
    ("server:\n  listen: 127.0.0.1:1\n  thread: 4\ntenants: {}\n", 3, "server.thread",
     "(did you mean 'threads'?)"),
    ("server:\n  auth:\n    cache: 1\ntenants: {}\n", 3, "server.auth.cache", "cache_seconds"),
    ("tenants:\n  acme:\n    root: {type: memory}\n    user: {}\n", 4, "tenants.acme.user",
     "(did you mean 'users'?)"),
    (f"tenants:\n  acme:\n    root: {{type: memory}}\n    users:\n      bob:\n"
     f"        password_hash: '{HASH}'\n        group: []\n", 7,
     "tenants.acme.users.bob.group", "password_hash, password_hash_file"),
    ("tenants:\n  acme:\n    root: {type: memory}\n    mounts:\n      /p:\n        provider:\n"
     "          type: memory\n          size: 1\n", 8, "tenants.acme.mounts./p.provider.size",
     "expected one of: type"),
])
def test_unknown_key_at_any_depth(tmp_path: Path, text: str, line: int, key: str,
                                  expected: str) -> None:
    [problem] = problems_of(write(tmp_path, text))
    assert (problem.line, problem.key) == (line, key)
    assert f"unknown key '{key.rpartition('.')[2]}'" in problem.message
    assert expected in problem.message


def test_unknown_provider_option_names_line_and_allowed_keys(
        tmp_path: Path, secret_provider: str) -> None:
    path = write(tmp_path, """
        tenants:
          acme:
            root:
              type: vault
              bukcet: files
              token: tok-1
        """)
    assert [(p.line, p.column, p.key, p.message) for p in problems_of(path)] == [
        (3, 5, "tenants.acme.root.bucket", "missing required key 'bucket'"),
        (5, 7, "tenants.acme.root.bukcet", "unknown key 'bukcet' (did you mean 'bucket'?); "
         "expected one of: bucket, token, token_file, type"),
    ]


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_yaml("""
        mounts:
          /p:
            provider: {type: memory}
            read_only: sometimes
        """))
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (10, "tenants.acme.mounts./p.read_only")
    assert "valid boolean" in problem.message


@pytest.mark.parametrize("tenant_id", ["Acme", "-acme", "ac_me"])
def test_bad_tenant_id(tmp_path: Path, tenant_id: str) -> None:
    [problem] = problems_of(write(tmp_path, tenant_yaml(tenant=tenant_id)))
    assert (problem.line, problem.key) == (2, f"tenants.{tenant_id}")
    assert "pattern" in problem.message


def test_duplicate_keys_reported_at_the_repeat(tmp_path: Path) -> None:
    path = write(tmp_path, """
        server:
          threads: 4
          threads: 8
        tenants:
          acme:
            root: {type: memory}
          acme:
            root: {type: memory}
        """)
    assert [(p.line, p.key, p.message) for p in problems_of(path)] == [
        (3, "server.threads", "duplicate key (an earlier line sets it too)"),
        (7, "tenants.acme", "duplicate key (an earlier line sets it too)"),
    ]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, """
        tenants:
          acme:
            root: &shared {type: memory}
            mounts:
              /p:
                provider:
                  <<: *shared
                  type: memory
        """)
    assert load_config(path).tenants["acme"].mounts["/p"].provider.type == "memory"


@pytest.mark.parametrize(("text", "line"), [
    ("tenants:\n  acme:\n    groups: [a, b\n", 4),
    ("tenants:\n  acme:\n\troot: {}\n", 3),
    ("tenants: {}\n---\ntenants: {}\n", 2),
])
def test_yaml_syntax_error_is_one_problem_with_its_line(tmp_path: Path, text: str,
                                                        line: int) -> None:
    [problem] = problems_of(write(tmp_path, text))
    assert problem.line == line
    assert problem.message.startswith("YAML syntax error")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    [problem] = problems_of(write(tmp_path, text))
    assert "expected a mapping" in problem.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "absent.yaml")
    assert "cannot read config" in problem.message
    assert str(problem).startswith(f"{tmp_path / 'absent.yaml'}: ")


def test_unknown_provider_points_at_type(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "tenants:\n  acme:\n    root:\n      type: ftp\n"))
    assert (problem.line, problem.key) == (4, "tenants.acme.root.type")
    assert "unknown provider 'ftp' (known: " in problem.message


@pytest.mark.parametrize(("provider", "key"), [
    ("{type: s3, bucket: files, endpoint_url: 'http://admin:hunter22@127.0.0.1:9000'}",
     "endpoint_url"),
    ("{type: gcs, bucket: files, endpoint_url: 'https://admin:hunter22@gcs.example'}",
     "endpoint_url"),
    ("{type: azure_blob, container: files, account: acme, account_key: k,"
     " account_url: 'https://admin:hunter22@acme.blob.example'}", "account_url"),
    ("{type: swift, container: files, user: u, key: k,"
     " auth_url: 'https://admin:hunter22@swift.example/auth/v1.0'}", "auth_url"),
])
def test_service_urls_carrying_credentials_are_refused_without_echo(
        tmp_path: Path, provider: str, key: str) -> None:
    """botocore answers such an endpoint with an error on every request, and every
    library logs or echoes endpoints: credentials go in the masked secret keys."""
    [problem] = problems_of(write(tmp_path, f"tenants:\n  acme:\n    root: {provider}\n"))
    assert (problem.line, problem.key) == (3, f"tenants.acme.root.{key}")
    assert "must not carry a user or password" in problem.message
    assert "hunter22" not in str(problem) and "admin" not in str(problem)


# --- mounts, references -----------------------------------------------------------------------

@pytest.mark.parametrize(("mount", "message"), [
    ("/", "'/' is the tenant root"),
    ("/a/", "expected '/a'"),
    ("/a//b", "expected '/a/b'"),
    ("/a/../b", "expected '/b'"),
    ("/a/./b", "expected '/a/b'"),
    ("a", "should match pattern '^/'"),
])
def test_bad_mount_paths_refused_at_their_key(tmp_path: Path, mount: str, message: str) -> None:
    path = write(tmp_path, tenant_yaml(f"""
        mounts:
          "{mount}":
            provider: {{type: memory}}
        """))
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (8, f"tenants.acme.mounts.{mount}")
    assert message in problem.message


def test_mount_paths_differing_only_in_case_refused(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_yaml("""
        mounts:
          /Projects: {provider: {type: memory}}
          /projects: {provider: {type: memory}}
        """))
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (9, "tenants.acme.mounts./projects")
    assert "same path as '/Projects'" in problem.message


@pytest.mark.parametrize(("principal", "message"), [
    ("@auditors", "undeclared group 'auditors'"),
    ("carol", "unknown user 'carol'"),
])
def test_permissions_naming_unknown_principal_refused(tmp_path: Path, principal: str,
                                                      message: str) -> None:
    path = write(tmp_path, tenant_yaml(f"""
        permissions:
          /finance:
            "{principal}": read
            "@staff": write
            "*": none
        """))
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (9, f"tenants.acme.permissions./finance.{principal}")
    assert message in problem.message


def test_login_domain_claimed_by_two_tenants(tmp_path: Path) -> None:
    path = write(tmp_path, """
        tenants:
          acme:
            domains: [acme.example]
            root: {type: memory}
          globex:
            domains: [globex.example, ACME.example]
            root: {type: memory}
        """)
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (6, "tenants.globex.domains[1]")
    assert "already claimed by tenant 'acme'" in problem.message


# --- ${ENV} and _file -------------------------------------------------------------------------

def test_env_references_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSAIC_TEST_PORT", "9443")
    monkeypatch.setenv("MOSAIC_TEST_HASH", HASH)
    path = write(tmp_path, """
        server:
          listen: 127.0.0.1:${MOSAIC_TEST_PORT}
          database_url: sqlite:///$${NOT_EXPANDED}
        tenants:
          acme:
            root: {type: memory}
            users: {bob: {password_hash: "${MOSAIC_TEST_HASH}"}}
        """)
    config = load_config(path)
    assert config.server.port == 9443
    assert config.server.database_url == "sqlite:///${NOT_EXPANDED}"
    assert config.tenants["acme"].users["bob"].password_hash.get_secret_value() == HASH


def test_missing_env_var_names_the_variable_only(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSAIC_TEST_UNSET", raising=False)
    path = write(tmp_path, """
        tenants:
          acme:
            root: {type: memory}
            users:
              bob:
                password_hash: "${MOSAIC_TEST_UNSET}"
        """)
    [problem] = problems_of(path)
    assert (problem.line, problem.key) == (6, "tenants.acme.users.bob.password_hash")
    assert problem.message == "environment variable MOSAIC_TEST_UNSET is not set"


def test_missing_env_var_in_a_secret_file_path_is_one_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSAIC_TEST_UNSET", raising=False)
    path = write(tmp_path, """
        tenants:
          acme:
            root: {type: memory}
            users:
              bob:
                password_hash_file: ${MOSAIC_TEST_UNSET}/bob.hash
        """)
    assert [(p.line, p.key, p.message) for p in problems_of(path)] == [
        (6, "tenants.acme.users.bob.password_hash",
         "environment variable MOSAIC_TEST_UNSET is not set")]


def test_file_indirection_reads_the_file_minus_one_newline(tmp_path: Path) -> None:
    (tmp_path / "bob.hash").write_text(HASH + "\n")
    path = write(tmp_path, """
        tenants:
          acme:
            root: {type: memory}
            users:
              bob:
                password_hash_file: bob.hash
        """)
    assert load_config(path).tenants["acme"].users["bob"].password_hash.get_secret_value() \
        == HASH


def test_file_indirection_in_provider_options(tmp_path: Path, secret_provider: str) -> None:
    (tmp_path / "vault.token").write_text(SECRET_TOKEN + "\n\n")
    path = write(tmp_path, f"""
        tenants:
          acme:
            root:
              type: vault
              bucket: b
              token_file: {tmp_path / 'vault.token'}
        """)
    spec = load_config(path).tenants["acme"].root
    assert spec.options().token.get_secret_value() == SECRET_TOKEN + "\n"  # one newline only


def test_unreadable_secret_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        tenants:
          acme:
            root: {{type: memory}}
            users:
              bob:
                password_hash_file: {tmp_path / 'absent.hash'}
              eve:
                password_hash: "{HASH}"
                password_hash_file: eve.hash
        """)
    assert [(p.line, p.key, p.message) for p in problems_of(path)] == [
        (6, "tenants.acme.users.bob.password_hash",
         f"cannot read {tmp_path / 'absent.hash'}: No such file or directory"),
        (9, "tenants.acme.users.eve.password_hash_file",
         "give either password_hash or password_hash_file, not both"),
    ]


# --- secrets stay secret ----------------------------------------------------------------------

def test_bad_secret_value_never_appears_in_errors(tmp_path: Path) -> None:
    leaked = "hunter2-my-real-password"
    path = write(tmp_path, f"""
        tenants:
          acme:
            root: {{type: memory}}
            users:
              bob: {{password_hash: {leaked}}}
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.key == "tenants.acme.users.bob.password_hash"
    assert "expected an argon2 hash" in problem.message
    for text in (str(caught.value), repr(caught.value), repr(problem)):
        assert leaked not in text


def test_secret_echoed_by_a_provider_validator_is_scrubbed(tmp_path: Path,
                                                          secret_provider: str) -> None:
    leaked = "sk-live-0123456789"
    path = write(tmp_path, f"tenants:\n  acme:\n    root: {{type: vault, bucket: b, "
                           f"token: {leaked}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "must start with tok-" in str(caught.value)
    assert leaked not in str(caught.value) and leaked not in repr(caught.value)


def test_direct_validation_errors_hide_inputs() -> None:
    leaked = "hunter2-my-real-password"
    with pytest.raises(ValidationError) as caught:
        schema.User.model_validate({"password_hash": leaked})
    assert leaked not in str(caught.value)


def test_secrets_absent_from_repr_and_redacted_dump(tmp_path: Path, secret_provider: str) -> None:
    path = write(tmp_path, f"""
        server:
          database_url: postgresql://mosaic:db-pa55word@db.example/mosaic
        tenants:
          acme:
            root: {{type: vault, bucket: b, token: {SECRET_TOKEN}}}
            users: {{bob: {{password_hash: "{HASH}"}}}}
        """)
    config = load_config(path)
    dump = redacted_dump(config)
    for text in (str(config), repr(config), dump):
        assert HASH not in text and SECRET_TOKEN not in text
    assert "db-pa55word" not in dump
    assert "postgresql://mosaic:***@db.example/mosaic" in dump
    assert "password_hash: '***'" in dump and "token: '***'" in dump


# --- the embedded default ---------------------------------------------------------------------

def test_default_config_makes_a_password_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config, password = default_config(data_dir)
    assert password is not None and len(password) == 16
    hash_file = data_dir / "admin.hash"
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o600
    stored = hash_file.read_text().strip()
    assert password not in hash_file.read_text()
    assert PasswordHasher().verify(stored, password)
    admin = config.tenants["default"].users["admin"]
    assert admin.password_hash.get_secret_value() == stored and admin.groups == ["admins"]

    again, second = default_config(data_dir)
    assert second is None
    assert again.tenants["default"].users["admin"].password_hash.get_secret_value() == stored


def test_default_config_layout_and_listen(tmp_path: Path) -> None:
    config, _ = default_config(tmp_path, listen="0.0.0.0:9000")
    tenant = config.tenants["default"]
    assert list(config.tenants) == ["default"]
    assert config.server.listen == "0.0.0.0:9000"
    assert config.server.data_dir == tmp_path
    assert tenant.root.type == "local"
    assert tenant.root.model_extra == {"root": str(tmp_path / "tenants" / "default")}
    assert tenant.groups == ["admins"]


def test_default_config_refuses_bad_listen(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        default_config(tmp_path, listen="nowhere")
    assert caught.value.problems[0].key == "server.listen"


def test_default_config_tightens_a_loose_hash_file(tmp_path: Path) -> None:
    default_config(tmp_path)
    os.chmod(tmp_path / "admin.hash", 0o644)
    _, password = default_config(tmp_path)
    assert password is None
    assert stat.S_IMODE((tmp_path / "admin.hash").stat().st_mode) == 0o600


# --- the generated reference ------------------------------------------------------------------

def test_reference_doc_matches_schema() -> None:
    doc = REPO / "docs" / "config-reference.md"
    assert doc.read_text(encoding="utf-8") == render_reference(), (
        "docs/config-reference.md is stale: run "
        "`python -m mosaic.config.docs > docs/config-reference.md`")


def test_every_schema_key_is_described() -> None:
    models = [schema.Config, schema.Server, schema.TLS, schema.AuthSettings, schema.Tenant,
              schema.Mount, schema.User, schema.ProviderSpec]
    undescribed = [f"{m.__name__}.{name}" for m in models
                   for name, field in m.model_fields.items() if not field.description]
    assert undescribed == []
