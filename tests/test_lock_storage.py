"""SqlLockStorage and AtomicLockManager on real SQLite files and real PostgreSQL."""

from __future__ import annotations

import gc
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from wsgidav.dav_error import HTTP_LOCKED, DAVError
from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.wsgidav_app import WsgiDAVApp

from mosaic.dav.locks import (
    LOCK_TIME_OUT_DEFAULT,
    LOCK_TIME_OUT_MAX,
    WRITE_LEASE_S,
    AtomicLockManager,
    SqlLockStorage,
    install_lock_manager,
)
from mosaic.dav.store import ActiveWriteRow, LockRow, make_engine


@pytest.fixture
def storage(engine: Engine) -> SqlLockStorage:
    storage = SqlLockStorage(engine)
    storage.open()
    return storage


def _lock(scope: str = "exclusive", depth: str = "0", **extra: Any) -> dict[str, Any]:
    owner = b'<D:owner xmlns:D="DAV:"><D:href>mailto:a@example.com</D:href></D:owner>'
    lock = {"type": "write", "scope": scope, "depth": depth, "owner": owner,
            "timeout": 60, "principal": "alice"}
    return {**lock, **extra}


def _acquire(manager: LockManager, url: str, *, depth: str = "0", scope: str = "exclusive",
             principal: str = "alice") -> dict[str, Any]:
    return manager.acquire(url=url, lock_type="write", lock_scope=scope, lock_depth=depth,
                           lock_owner=b"<owner/>", timeout=60, principal=principal,
                           token_list=[])


def _roots(storage: SqlLockStorage, path: str, **flags: bool) -> list[str]:
    return [lock["root"] for lock in storage.get_lock_list(path, token_only=False, **flags)]


def _expire(engine: Engine, token: str, expire: float) -> None:
    """Move a lock's expiry, as if the clock had moved on."""
    with engine.begin() as conn:
        conn.execute(update(LockRow).where(LockRow.token == token).values(expire=expire))


def test_create_and_get_round_trip(storage: SqlLockStorage) -> None:
    lock = storage.create("/acme/projects/doc.txt/", _lock(depth="infinity"))
    assert lock["token"].startswith("opaquelocktoken:")
    assert lock["root"] == "/acme/projects/doc.txt"
    assert lock["expire"] == pytest.approx(time.time() + 60, abs=5)
    assert storage.get(lock["token"]) == lock
    assert storage.get("opaquelocktoken:unknown") is None


@pytest.mark.parametrize(
    ("asked", "granted"),
    [(None, LOCK_TIME_OUT_DEFAULT), (-1, LOCK_TIME_OUT_MAX), (1e9, LOCK_TIME_OUT_MAX), (5, 5)],
)
def test_timeouts_are_capped_like_wsgidav(
    storage: SqlLockStorage, asked: float | None, granted: float
) -> None:
    lock = storage.create("/acme/f", _lock(timeout=asked))
    assert storage.get(lock["token"])["timeout"] == granted
    assert storage.refresh(lock["token"], timeout=asked)["timeout"] == granted


def test_create_rejects_bad_locks(storage: SqlLockStorage) -> None:
    for bad in (_lock(scope="both"), _lock(depth="1"), _lock(owner="str"), _lock(token="t")):
        with pytest.raises(ValueError):
            storage.create("/acme/f", bad)
    assert storage.get_lock_list("/", include_root=True, include_children=True,
                                 token_only=True) == []


def test_refresh_restarts_timeout(storage: SqlLockStorage, engine: Engine) -> None:
    lock = storage.create("/acme/f", _lock())
    _expire(engine, lock["token"], time.time() + 1)
    refreshed = storage.refresh(lock["token"], timeout=3600)
    assert refreshed["expire"] == pytest.approx(time.time() + 3600, abs=5)
    assert storage.get(lock["token"])["expire"] == refreshed["expire"]
    with pytest.raises(ValueError):
        storage.refresh("opaquelocktoken:unknown", timeout=60)


def test_delete(storage: SqlLockStorage) -> None:
    lock = storage.create("/acme/f", _lock())
    assert storage.delete(lock["token"]) is True
    assert storage.delete(lock["token"]) is False
    assert storage.get(lock["token"]) is None


DOC = "/acme/race/doc.txt"
TREE = ["/acme/a", "/acme/a/b", "/acme/a/b/c", "/acme/ab", "/acme/a-b", "/acme/A/b",
        "/acme/ä/b", "/acme2/a/b", "/globex/a/b", "/acme/a_/b", "/acme/a%/b"]


def test_lock_list_root_children_and_prefix_safety(storage: SqlLockStorage) -> None:
    tokens = {root: storage.create(root, _lock())["token"] for root in TREE}
    assert _roots(storage, "/acme/a", include_root=True, include_children=False) == ["/acme/a"]
    assert _roots(storage, "/acme/a/", include_root=False, include_children=True) == [
        "/acme/a/b", "/acme/a/b/c"]
    assert _roots(storage, "/acme/a", include_root=True, include_children=True) == [
        "/acme/a", "/acme/a/b", "/acme/a/b/c"]
    assert storage.get_lock_list("/acme/a/b", include_root=True, include_children=True,
                                 token_only=True) == [tokens["/acme/a/b"], tokens["/acme/a/b/c"]]
    assert _roots(storage, "/acme/a_", include_root=True, include_children=True) == [
        "/acme/a_/b"]
    assert sorted(_roots(storage, "/", include_root=False, include_children=True)) == sorted(TREE)


def test_tenants_never_see_each_others_locks(storage: SqlLockStorage) -> None:
    for root in TREE:
        storage.create(root, _lock())
    acme = _roots(storage, "/acme", include_root=True, include_children=True)
    assert all(root.startswith("/acme/") for root in acme)
    assert len(acme) == len([r for r in TREE if r.startswith("/acme/")])
    assert _roots(storage, "/acme2", include_root=False, include_children=True) == ["/acme2/a/b"]
    assert _roots(storage, "/globex", include_root=False, include_children=True) == [
        "/globex/a/b"]


def test_expired_locks_are_ignored_and_purged(storage: SqlLockStorage, engine: Engine) -> None:
    old, forever, live = (storage.create(f"/acme/f{i}", _lock())["token"] for i in range(3))
    _expire(engine, old, time.time() - 1)
    _expire(engine, forever, -1)  # expire < 0: never
    assert storage.get_lock_list("/acme", include_root=False, include_children=True,
                                 token_only=True) == [forever, live]
    assert storage.get(old) is None
    assert storage.delete(old) is False  # an expired lock counts as gone
    with pytest.raises(ValueError):
        storage.refresh(old, timeout=60)
    _expire(engine, live, time.time() - 1)
    storage.cleanup()
    assert storage.delete(live) is False
    assert storage.get(forever) is not None


def test_expired_rows_are_purged_when_a_lock_is_created(storage: SqlLockStorage,
                                                       engine: Engine) -> None:
    old = storage.create("/acme/old", _lock())["token"]
    _expire(engine, old, time.time() - 1)
    storage.get_lock_list("/acme", include_root=True, include_children=True, token_only=True)
    storage.create("/acme/new", _lock())
    with engine.begin() as conn:
        assert conn.execute(select(LockRow).where(LockRow.token == old)).first() is None


def test_one_query_finds_locks_on_ancestors_and_below(storage: SqlLockStorage) -> None:
    tokens = {path: storage.create(path, _lock())["token"]
              for path in ("/acme", "/acme/a", "/acme/a/b/c", "/acme/ab", "/globex/a")}
    above = {lock["token"] for lock in storage.locks_on_or_above("/acme/a/b",
                                                                  include_children=False)}
    assert above == {tokens["/acme"], tokens["/acme/a"]}
    tree = {lock["token"] for lock in storage.locks_on_or_above("/acme/a/b",
                                                                 include_children=True)}
    assert tree == {tokens["/acme"], tokens["/acme/a"], tokens["/acme/a/b/c"]}


def test_locks_survive_restart_and_discarded_managers(db_url: str) -> None:
    first = make_engine(db_url)
    manager = LockManager(SqlLockStorage(first))
    token = _acquire(manager, "/acme/f")["token"]
    del manager  # wsgidav's LockManager.__del__ closes its storage
    gc.collect()
    first.dispose()
    second = make_engine(db_url)
    try:
        storage = SqlLockStorage(second)
        assert storage.get(token)["root"] == "/acme/f"
        assert storage.get_lock_list("/acme/f", include_root=True, include_children=False,
                                     token_only=True) == [token]
    finally:
        second.dispose()


def test_atomic_manager_keeps_wsgidav_conflict_rules(storage: SqlLockStorage) -> None:
    manager = AtomicLockManager(storage)
    _acquire(manager, "/acme/d", depth="infinity")
    for url, depth in [("/acme/d", "0"), ("/acme/d/x/y", "0"), ("/acme", "infinity")]:
        with pytest.raises(DAVError) as err:
            _acquire(manager, url, depth=depth, principal="bob")
        assert err.value.value == HTTP_LOCKED
    _acquire(manager, "/acme/dx", depth="infinity", principal="bob")
    _acquire(manager, "/acme/e", scope="shared")
    _acquire(manager, "/acme/e", scope="shared", principal="bob")
    assert len(storage.get_lock_list("/", include_root=True, include_children=True,
                                     token_only=True)) == 4


def test_threads_of_one_process_share_a_manager(storage: SqlLockStorage) -> None:
    """Per-thread transactions: no thread joins another's, none is lost."""
    manager = AtomicLockManager(storage)
    with ThreadPoolExecutor(max_workers=8) as pool:
        same = list(pool.map(lambda i: _try_lock(manager, DOC, "0", f"u{i}"), range(8)))
        own = list(pool.map(lambda i: _try_lock(manager, f"/acme/t{i}", "0", "u"), range(8)))
    assert sorted(same) == ["granted"] + ["locked"] * 7
    assert own == ["granted"] * 8


def test_install_lock_manager_into_wsgidav_app(storage: SqlLockStorage, tmp_path) -> None:
    config = {"provider_mapping": {"/share": str(tmp_path)}, "lock_storage": storage,
              "simple_dc": {"user_mapping": {"*": True}}, "logging": {"enable": False}}
    app = WsgiDAVApp(config)
    manager = install_lock_manager(app, storage)
    assert app.lock_manager is manager
    assert len(app.provider_map) == 2  # /share and wsgidav's own /:dir_browser
    assert all(p.lock_manager is manager for p in app.provider_map.values())
    _acquire(app.provider_map["/share"].lock_manager, "/share/f")
    assert _roots(storage, "/share", include_root=False, include_children=True) == ["/share/f"]


# --- several processes racing for the same lock ------------------------------------------

WORKERS = 4
ROUNDS = 3


def _try_lock(manager: LockManager, url: str, depth: str, principal: str) -> str:
    try:
        _acquire(manager, url, depth=depth, principal=principal)
    except DAVError as err:
        return "locked" if err.value == HTTP_LOCKED else f"status {err.value}"
    except Exception as err:  # reported to the parent, which fails the test
        return repr(err)
    return "granted"


#: In a race plan, the "depth" that means: begin a write (a PUT) instead of a LOCK.
WRITE = "write"


def _try_write(manager: AtomicLockManager, url: str, principal: str) -> str:
    try:
        manager._begin_write_transaction(url=url, token_list=[], principal=principal)
    except DAVError as err:
        return "locked" if err.value == HTTP_LOCKED else f"status {err.value}"
    except Exception as err:  # reported to the parent, which fails the test
        return repr(err)
    return "writing"


def _race_worker(db_url: str, index: int, plan: list[list[tuple[str, str]]],
                 start: Any, done: Any, results: Any) -> None:
    """One worker process: its own engine and manager, one attempt per round.

    A write started in a round is held until every worker has tried, as a slow PUT is.
    """
    engine = make_engine(db_url)
    manager = AtomicLockManager(SqlLockStorage(engine))
    try:
        for round_no, attempts in enumerate(plan):
            url, depth = attempts[index]
            start.wait(timeout=60)
            if depth == WRITE:
                outcome = _try_write(manager, url, f"user{index}")
            else:
                outcome = _try_lock(manager, url, depth, f"user{index}")
            results.put((round_no, outcome))
            done.wait(timeout=60)
            if outcome == "writing":
                manager._end_write_transaction(url)
    finally:
        engine.dispose()


def _race(db_url: str, plan: list[list[tuple[str, str]]]) -> list[list[str]]:
    """Run the plan in WORKERS spawned processes; per round, the sorted outcomes."""
    ctx = multiprocessing.get_context("spawn")
    start, done, results = ctx.Barrier(WORKERS + 1), ctx.Barrier(WORKERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(db_url, i, plan, start, done, results))
             for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    engine = make_engine(db_url)
    storage, outcomes = SqlLockStorage(engine), []
    try:
        storage.open()
        for round_no in range(len(plan)):
            storage.clear()
            start.wait(timeout=60)  # every worker is ready: all try at once
            got = [results.get(timeout=60) for _ in range(WORKERS)]
            assert {r for r, _ in got} == {round_no}
            outcomes.append(sorted(outcome for _, outcome in got))
            done.wait(timeout=60)
    except BaseException:
        start.abort()  # release workers stuck at a barrier at once
        done.abort()
        raise
    finally:
        for proc in procs:
            proc.join(timeout=10)
        engine.dispose()
    assert [proc.exitcode for proc in procs] == [0] * WORKERS
    return outcomes


ONE_WINNER = ["granted"] + ["locked"] * (WORKERS - 1)
SAME_DOC = [(DOC, "0")] * WORKERS
PARENT_VS_CHILD = [("/acme/race", "infinity"), (DOC, "0")] * (WORKERS // 2)
WRITES_VS_LOCKS = [(DOC, WRITE), (DOC, "0")] * (WORKERS // 2)
# Writes do not exclude each other; a write and a lock do, whichever comes first.
WRITES_FIRST = ["locked"] * (WORKERS // 2) + ["writing"] * (WORKERS // 2)


def test_racing_processes_get_exactly_one_lock(db_url: str) -> None:
    """Exclusive depth-0 on one URL, depth-infinity parent against child, PUTs against LOCKs.

    All scenarios share one set of worker processes: spawning is the slow part.
    """
    plan = [SAME_DOC, PARENT_VS_CHILD, WRITES_VS_LOCKS] * ROUNDS
    outcomes = _race(db_url, plan)
    assert outcomes[0::3] == [ONE_WINNER] * ROUNDS, "same resource"
    assert outcomes[1::3] == [ONE_WINNER] * ROUNDS, "parent against child"
    for outcome in outcomes[2::3]:
        assert outcome in (ONE_WINNER, WRITES_FIRST), "writes against locks"


# --- writes in progress (PUT bodies) against LOCKs ---------------------------------------


def _refused_for(manager: LockManager, url: str, depth: str = "0") -> list[str]:
    """Try a LOCK as bob; it must answer 423. Return the conflicting URLs it names."""
    with pytest.raises(DAVError) as err:
        _acquire(manager, url, depth=depth, principal="bob")
    assert err.value.value == HTTP_LOCKED
    return err.value.err_condition.hrefs


def _leases(engine: Engine) -> list[tuple[str, float]]:
    with engine.begin() as conn:
        rows = conn.execute(select(ActiveWriteRow.ref_url, ActiveWriteRow.expires)
                            .order_by(ActiveWriteRow.ref_url))
        return [(row.ref_url, row.expires) for row in rows]


def _writer(db_url: str, url: str, began: Any, finish: Any, ended: Any) -> None:
    """A worker process in the middle of a PUT: wsgidav's write transaction held open."""
    engine = make_engine(db_url)
    manager = AtomicLockManager(SqlLockStorage(engine))
    try:
        with manager.write_transaction(url=url, token_list=[], principal="alice"):
            began.set()
            finish.wait(timeout=60)
        ended.set()
    finally:
        engine.dispose()


def test_write_in_one_process_blocks_lock_in_another(db_url: str, storage: SqlLockStorage) -> None:
    ctx = multiprocessing.get_context("spawn")
    began, finish, ended = ctx.Event(), ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_writer, args=(db_url, DOC, began, finish, ended))
    writer.start()
    try:
        assert began.wait(timeout=60), "writer never began"
        manager = AtomicLockManager(storage)  # this process: another worker
        assert _refused_for(manager, DOC) == [DOC]
        assert _refused_for(manager, "/acme/race", "infinity") == [DOC]
        _acquire(manager, "/acme/race/other.txt")  # only the URL being written is held
        finish.set()
        assert ended.wait(timeout=60), "writer never ended"
        assert _acquire(manager, DOC, principal="bob")["root"] == DOC
    finally:
        finish.set()
        writer.join(timeout=30)
    assert writer.exitcode == 0


def test_lease_lasts_write_lease_s_and_blocks_until_expired(
    storage: SqlLockStorage, engine: Engine
) -> None:
    """A crashed worker never ends its lease: it blocks until it expires, then nothing."""
    manager = AtomicLockManager(storage)
    manager._begin_write_transaction(url=DOC, token_list=[], principal="alice")
    [(url, expires)] = _leases(engine)
    assert (url, expires) == (DOC, pytest.approx(time.time() + WRITE_LEASE_S, abs=5))
    assert _refused_for(manager, DOC) == [DOC]
    with engine.begin() as conn:
        conn.execute(update(ActiveWriteRow).values(expires=time.time() - 1))
    assert _acquire(manager, DOC, principal="bob")["root"] == DOC
    storage.begin_write("/acme/other", lease_s=60)  # purges the expired lease
    assert [url for url, _ in _leases(engine)] == ["/acme/other"]


def test_a_running_write_keeps_its_lease_alive(storage: SqlLockStorage, engine: Engine) -> None:
    manager = AtomicLockManager(storage, write_lease_s=0.6)
    manager._begin_write_transaction(url=DOC, token_list=[], principal="alice")
    time.sleep(1.5)  # well past the lease's first expiry: only renewal keeps it
    [(_, expires)] = _leases(engine)
    assert expires > time.time()
    assert _refused_for(manager, DOC) == [DOC]
    manager._end_write_transaction(DOC)
    assert _leases(engine) == []


def test_write_refused_by_a_lock_takes_no_lease(storage: SqlLockStorage, engine: Engine) -> None:
    manager = AtomicLockManager(storage)
    token = _acquire(manager, "/acme/race", depth="infinity")["token"]
    with pytest.raises(DAVError) as err:
        manager._begin_write_transaction(url=DOC, token_list=[], principal="bob")
    assert err.value.value == HTTP_LOCKED
    assert _leases(engine) == []
    with manager.write_transaction(url=DOC, token_list=[token], principal="alice"):
        assert [url for url, _ in _leases(engine)] == [DOC]
    assert _leases(engine) == []


def test_overlapping_writes_in_one_process_each_hold_the_url(
    storage: SqlLockStorage, engine: Engine
) -> None:
    manager = AtomicLockManager(storage)
    for _ in range(2):
        manager._begin_write_transaction(url=DOC + "/", token_list=[], principal="alice")
    manager._end_write_transaction(DOC)
    assert _refused_for(manager, DOC) == [DOC]  # the second write is still running
    manager._end_write_transaction(DOC)
    manager._end_write_transaction(DOC)  # one too many: nothing left to end, no error
    assert _leases(engine) == []
    _acquire(manager, DOC, principal="bob")
