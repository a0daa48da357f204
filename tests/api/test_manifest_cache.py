"""The current manifest is served from memory for a short time: the hot path of every poller."""

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Connection

from certifier.api.manifest_cache import FORMATS, ManifestCache, Representation
from certifier.domain.clock import FakeClock
from tests.factories import World


class StatementCounter:
    def __init__(self, connection: Connection) -> None:
        self.count = 0
        event.listen(connection, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


def test_an_entry_expires_after_the_ttl() -> None:
    now = [100.0]
    cache = ManifestCache(ttl=1.0, clock=lambda: now[0])
    rep = Representation(b"{}", "application/json", '"x"')
    cache.put("json", rep)
    assert cache.get("json") == (True, rep)
    now[0] += 1.0
    assert cache.get("json") == (False, None)


def test_no_known_good_is_cached_too_and_clear_forgets_everything() -> None:
    cache = ManifestCache(ttl=5.0, clock=lambda: 0.0)
    cache.put("json", None)
    assert cache.get("json") == (True, None)
    cache.clear()
    assert cache.get("json") == (False, None)


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = ManifestCache(ttl=0.0, clock=lambda: 0.0)
    cache.put("yaml", None)
    assert cache.get("yaml") == (False, None)


def test_a_repeated_request_is_answered_without_touching_the_database(
    client: TestClient, world: World, clock: FakeClock, db_connection: Connection
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    assert world.promote_heads() == 1
    first = client.get("/api/v1/manifest")
    counter = StatementCounter(db_connection)
    again = client.get("/api/v1/manifest")
    assert counter.count == 0
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    clock.advance(timedelta(seconds=2))
    assert client.get("/api/v1/manifest").status_code == 200
    assert counter.count > 0


def test_a_promotion_by_a_worker_is_served_once_the_ttl_has_passed(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    assert client.get("/api/v1/manifest").status_code == 404  # "no known-good yet" is cached
    assert world.promote_heads() == 1  # moves the clock on by minutes, as a real soak would
    answer = client.get("/api/v1/manifest")
    assert answer.status_code == 200 and answer.json()["version"] == 1


def test_each_format_is_cached_with_its_own_etag(client: TestClient, world: World) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    tags = {fmt: client.get(f"/api/v1/manifest?format={fmt}").headers["etag"]
            for fmt in ("json", "yaml", "env")}
    assert len(set(tags.values())) == 3
    assert client.get("/api/v1/manifest?format=env",
                      headers={"If-None-Match": tags["env"]}).status_code == 304


def test_the_fast_path_answers_exactly_as_the_route_does(client: TestClient, world: World,
                                                         db_connection: Connection) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    for fmt in ("json", "yaml", "env"):
        from_route = client.get(f"/api/v1/manifest?format={fmt}")
        counter = StatementCounter(db_connection)
        from_cache = client.get(f"/api/v1/manifest?format={fmt}")
        assert counter.count == 0
        assert from_cache.content == from_route.content
        for header in ("content-type", "content-length", "etag", "cache-control"):
            assert from_cache.headers[header] == from_route.headers[header], header


def test_requests_the_fast_path_does_not_understand_go_to_the_route(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    client.get("/api/v1/manifest")
    assert client.get("/api/v1/manifest?format=xml").status_code == 422
    assert client.get("/api/v1/manifest?format=json&at=not-a-time").status_code == 422
    assert client.post("/api/v1/manifest").status_code == 405


def test_every_200_and_304_carries_the_same_headers_from_the_route_and_the_fast_path(
        client: TestClient, world: World, db_connection: Connection) -> None:
    """One writer (``manifest_cache.answer``): the route (a miss, ``?at=``, ``/manifests/1``)
    and the fast path (a hit) send the same headers, a 304 the signature too, for every
    format."""
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    for fmt in FORMATS:
        current = f"/api/v1/manifest?format={fmt}"
        urls = {"route": current, "fast path": current,
                "history": f"/api/v1/manifests/1?format={fmt}",
                "at": f"/api/v1/manifest?format={fmt}&at=2100-01-01T00:00:00Z"}
        full = {}
        for name, url in urls.items():
            counter = StatementCounter(db_connection)
            full[name] = client.get(url)
            assert (counter.count == 0) == (name == "fast path"), name
            assert full[name].status_code == 200
        etag = full["route"].headers["etag"]
        not_modified = {}
        for name, url in urls.items():
            if name != "history":  # a version's ETag is its own document's
                not_modified[name] = client.get(url, headers={"If-None-Match": etag})
                assert not_modified[name].status_code == 304, (fmt, name)
        assert len({tuple(sorted(a.headers.items())) for a in full.values()}) == 1, fmt
        assert len({tuple(sorted(a.headers.items())) for a in not_modified.values()}) == 1, fmt
        answers = [*full.values(), *not_modified.values()]
        assert all(a.headers["x-manifest-signature"] == full["route"].headers[
            "x-manifest-signature"] for a in answers), fmt
        assert set(not_modified["route"].headers) == {"etag", "cache-control",
                                                      "x-manifest-signature"}
