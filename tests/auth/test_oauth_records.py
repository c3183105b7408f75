"""The OAuth records on both databases: each once-only step succeeds exactly once."""

from __future__ import annotations

import time

from carebase.auth.oauth_server import OAuthServer
from carebase.store.oauth_records import CodeRecord, LaunchRecord, RefreshRecord


def _code(code_hash: str = "h1", expires: int | None = None) -> CodeRecord:
    return CodeRecord(
        code_hash=code_hash, client_id="c", user_id="1", redirect_uri="https://a/cb",
        scopes=("openid",), code_challenge="x" * 43, patient="p1", encounter=None,
        nonce="n", expires=expires or int(time.time()) + 60, used=False, ehr_launch=True,
    )  # fmt: skip


def _refresh(token_hash: str, family: str = "f1", jti: str = "j1") -> RefreshRecord:
    return RefreshRecord(
        token_hash=token_hash, family=family, client_id="c", user_id="1",
        scopes=("offline_access",), patient="p1", encounter=None,
        expires=int(time.time()) + 3600, access_jti=jti, access_expires=int(time.time()) + 300,
        created=int(time.time()),
    )  # fmt: skip


def test_code_is_used_once(server: OAuthServer) -> None:
    records = server.records
    records.add_code(_code())
    first, won = records.use_code("h1")
    assert won and first is not None and first.used and first.patient == "p1"
    assert first.ehr_launch and first.nonce == "n"
    again, won_again = records.use_code("h1")
    assert again is not None and not won_again
    assert records.use_code("unknown") == (None, False)


def test_code_remembers_its_tokens(server: OAuthServer) -> None:
    server.records.add_code(_code())
    server.records.link_code_tokens("h1", "fam", "jti9", 1234)
    record, _ = server.records.use_code("h1")
    assert record is not None
    assert (record.refresh_family, record.access_jti, record.access_expires) == (
        "fam",
        "jti9",
        1234,
    )


def test_refresh_rotates_once_and_family_revokes(server: OAuthServer) -> None:
    records = server.records
    records.add_refresh(_refresh("r1"))
    assert records.rotate_refresh("r1", _refresh("r2", jti="j2"))
    assert not records.rotate_refresh("r1", _refresh("r3", jti="j3"))
    assert records.refresh("r3") is None
    old, new = records.refresh("r1"), records.refresh("r2")
    assert old is not None and old.replaced and not old.revoked
    assert new is not None and not new.replaced and new.family == "f1"
    revoked = records.revoke_family("f1")
    assert sorted(j for j, _ in revoked) == ["j1", "j2"]
    assert all(r.revoked for r in (records.refresh("r1"), records.refresh("r2")) if r)
    assert not records.rotate_refresh("r2", _refresh("r4"))


def test_assertion_jti_once_per_client(server: OAuthServer) -> None:
    records = server.records
    exp = int(time.time()) + 60
    assert records.remember_assertion("c1", "j", exp)
    assert not records.remember_assertion("c1", "j", exp)
    assert records.remember_assertion("c2", "j", exp)


def test_revoked_jtis_and_purge(server: OAuthServer) -> None:
    records = server.records
    now = int(time.time())
    records.revoke_jtis([("live", now + 100), ("old", now - 100)])
    records.revoke_jtis([("live", now + 100)])  # twice is fine
    assert records.revoked_jtis(now) == {"live"}
    records.remember_assertion("c", "gone", now - 10)
    records.purge_expired(now)
    with records.store.reading() as cur:
        assert cur.execute("SELECT jti FROM oauth_revoked_jti").fetchall() == [("live",)]
        assert cur.execute("SELECT jti FROM oauth_assertion_jti").fetchall() == []


def test_launch_round_trip(server: OAuthServer) -> None:
    launch = LaunchRecord("L1", "p1", "e1", "1", int(time.time()) + 300)
    server.records.add_launch(launch)
    assert server.records.launch("L1") == launch
    assert server.records.launch("L2") is None


def test_racing_redemptions_have_one_winner(server: OAuthServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    records = server.records
    records.add_code(_code("race"))
    records.add_refresh(_refresh("r-race", family="f-race"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda _: records.use_code("race")[1], range(8)))
        rotations = list(
            pool.map(
                lambda n: records.rotate_refresh("r-race", _refresh(f"r{n}", "f-race")), range(8)
            )
        )
        jtis = list(pool.map(lambda _: records.remember_assertion("c", "j-race", 2**40), range(8)))
    assert codes.count(True) == 1
    assert rotations.count(True) == 1
    assert jtis.count(True) == 1
