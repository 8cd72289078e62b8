"""The ``mosaic`` command: serve, check-config, ad-check, hash-password."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from pathlib import Path

from mosaic.config.schema import Config


def _serve(args: argparse.Namespace) -> int:
    from mosaic import logs
    from mosaic.config.holder import ConfigHolder
    from mosaic.config.loader import ConfigError
    from mosaic.preflight import StartupError
    from mosaic.server import claim, serve

    secret_files: set[Path] = set()
    try:
        overrides = _overrides(args)  # before the default config writes anything
        # The embedded default writes its admin password on first start: a second
        # instance must find the port taken before that, not after.
        listener = None if args.config else _bind_for_default(overrides)
        config = _serve_config(args, secret_files)
        if overrides:
            server = config.server.model_copy(update=overrides)
            config = config.model_copy(update={"server": server})
        listener = claim(config, listener)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except StartupError as problem:
        print(f"{args.config or 'mosaic serve'}: {problem}", file=sys.stderr)
        return 2
    logs.configure(config)
    print(f"Mosaic serving WebDAV on http{'s' if config.server.tls else ''}://"
          f"{config.server.listen}/", flush=True)
    return serve(ConfigHolder(args.config, config, secret_files=secret_files), listener)


def _serve_config(args: argparse.Namespace, secret_files: set[Path]) -> Config:
    """The config file's, or the embedded default over ``--data-dir``."""
    from mosaic.config.default import default_config
    from mosaic.config.loader import load_config
    from mosaic.preflight import StartupError, data_dir_problem

    if args.config:
        return load_config(args.config, read_files=secret_files)
    data_dir = Path(args.data_dir)
    problem = data_dir_problem(data_dir)  # the default writes its admin hash there
    if problem is not None:
        raise StartupError("--data-dir", problem.message)
    config, password = default_config(data_dir, args.listen)
    if password:
        print(f"Created tenant 'default' with user 'admin', password: {password}\n"
              "(shown once; only its hash is stored)", flush=True)
    return config


def _bind_for_default(overrides: dict[str, object]) -> socket.socket:
    from mosaic.config.schema import Server
    from mosaic.preflight import bind

    return bind(Server.model_validate({"listen": overrides.get("listen", Server().listen)}))


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--listen`` and ``--workers``, validated like the file's keys."""
    from pydantic import ValidationError

    from mosaic.config.schema import Server
    from mosaic.preflight import StartupError

    changes: dict[str, object] = {}
    if args.listen:
        changes["listen"] = args.listen
    if args.workers is not None:
        changes["workers"] = args.workers
    try:
        Server.model_validate(changes)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise StartupError(f"--{error['loc'][0]}", error["msg"]) from None
    return changes


def _load(path: Path) -> Config | None:
    """The config at ``path``, or None after printing why it is not valid."""
    from mosaic.config.loader import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    from mosaic.preflight import check

    config = _load(args.file)
    if config is None:
        return 1
    problems = [] if args.schema_only else check(config)
    for problem in problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.file}: OK ({len(config.tenants)} tenant(s))")
    return 0


def _ad_check(args: argparse.Namespace) -> int:
    from mosaic.auth.directory.check import check_tenant

    config = _load(args.file)
    if config is None:
        return 1
    tenant = config.tenants.get(args.tenant)
    if tenant is None:
        print(f"{args.file}: no tenant {args.tenant!r} (tenants: {', '.join(config.tenants)})",
              file=sys.stderr)
        return 1
    password = None
    if args.user is not None:
        password = (sys.stdin.readline().rstrip("\n") if args.stdin or not sys.stdin.isatty()
                    else getpass.getpass(f"Password of {args.user}: "))
    return 0 if check_tenant(args.tenant, tenant.active_directory, args.user, password) else 1


def _hash_password(args: argparse.Namespace) -> int:
    from mosaic.core.passwords import hash_password

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            print("passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("empty password refused", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mosaic", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the WebDAV server")
    serve.add_argument("--config", type=Path, help="YAML config (default: embedded default)")
    serve.add_argument("--data-dir", default="mosaic-data",
                       help="data directory of the embedded default")
    serve.add_argument("--listen", help="host:port, overrides the config")
    serve.add_argument("--workers", type=int, help="processes, overrides the config")
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check-config", help="validate a YAML config")
    check.add_argument("file", type=Path)
    check.add_argument("--schema-only", action="store_true",
                       help="validate the file only, not this machine (TLS files, data_dir, "
                            "listen address): for a config checked away from its server")
    check.set_defaults(run=_check_config)
    ad_check = commands.add_parser(
        "ad-check", help="check a tenant's Active Directory step by step (TCP, TLS and its "
        "certificate, binds, a user's entry and groups)")
    ad_check.add_argument("file", type=Path, help="YAML config")
    ad_check.add_argument("tenant", help="tenant id")
    ad_check.add_argument("user", nargs="?",
                          help="also sign in as this user (alice, alice@corp.example.com or "
                               "CORP\\alice); the password is asked for")
    ad_check.add_argument("--stdin", action="store_true", help="read the password from stdin")
    ad_check.set_defaults(run=_ad_check)
    hashing = commands.add_parser("hash-password", help="print an argon2 hash for a config")
    hashing.add_argument("--stdin", action="store_true", help="read the password from stdin")
    hashing.set_defaults(run=_hash_password)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)
