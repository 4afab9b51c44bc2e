import time

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.models.api_key import ApiKey
from app.models.base import Role
from app.services.api_keys import ensure_bootstrap_admin, hash_key
from tests.conftest import ClientFactory
from tests.factories import auth, make_key


class TestCreateApiKey:
    def test_admin_creates_key_shown_once_and_stored_hashed(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        response = client.post(
            "/v1/api-keys",
            json={"name": "alice", "role": "annotator", "tier": "crowd"},
            headers=admin,
        )
        assert response.status_code == 201
        body = response.json()
        assert body["name"] == "alice" and body["role"] == "annotator" and body["tier"] == "crowd"
        secret = body["key"]
        assert secret.startswith("lw_") and len(secret) > 40
        row = session.exec(select(ApiKey).where(ApiKey.name == "alice")).one()
        assert row.key_hash == hash_key(secret) and secret not in row.key_hash
        listed = client.get("/v1/api-keys", headers=admin).json()["items"]
        assert all("key" not in k for k in listed)
        assert client.get("/v1/projects", headers=auth(secret)).status_code == 200

    def test_duplicate_live_name_is_409(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        assert (
            client.post(
                "/v1/api-keys", json={"name": "bob", "role": "annotator"}, headers=admin
            ).status_code
            == 201
        )
        response = client.post(
            "/v1/api-keys", json={"name": "bob", "role": "service"}, headers=admin
        )
        assert response.status_code == 409

    def test_bad_name_and_role_are_422(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        response = client.post(
            "/v1/api-keys", json={"name": "has space", "role": "king"}, headers=admin
        )
        assert response.status_code == 422
        locs = {tuple(e["loc"]) for e in response.json()["errors"]}
        assert ("body", "name") in locs and ("body", "role") in locs

    def test_service_and_annotator_cannot_manage_keys(
        self, client: TestClient, session: Session
    ) -> None:
        for role in (Role.service, Role.annotator):
            headers = auth(make_key(session, role=role))
            assert (
                client.post(
                    "/v1/api-keys", json={"name": "x", "role": "admin"}, headers=headers
                ).status_code
                == 403
            )
            assert client.get("/v1/api-keys", headers=headers).status_code == 403


class TestAuthentication:
    def test_missing_and_unknown_keys_are_401(self, client: TestClient) -> None:
        response = client.get("/v1/projects")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/projects", headers=auth("lw_nope")).status_code == 401
        assert client.get("/v1/projects", headers={"Authorization": "Basic abc"}).status_code == 401


class TestRevokeApiKey:
    def test_revoked_key_stops_working_and_frees_its_name(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        created = client.post(
            "/v1/api-keys", json={"name": "carol", "role": "annotator"}, headers=admin
        ).json()
        assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 204
        assert client.get("/v1/projects", headers=auth(created["key"])).status_code == 401
        assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 404
        again = client.post(
            "/v1/api-keys", json={"name": "carol", "role": "annotator"}, headers=admin
        )
        assert again.status_code == 201

    def test_a_key_in_use_is_refused_at_once_after_revoking(
        self, client: TestClient, session: Session
    ) -> None:
        """This process trusts a key it authenticated for a few seconds; revoking it here forgets
        it here at once."""
        admin = auth(make_key(session))
        created = client.post(
            "/v1/api-keys", json={"name": "dave", "role": "annotator"}, headers=admin
        ).json()
        key = auth(created["key"])
        assert client.get("/v1/projects", headers=key).status_code == 200
        assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 204
        assert client.get("/v1/projects", headers=key).status_code == 401

    def test_other_processes_stop_trusting_a_revoked_key_within_the_cache_time(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        revoking, other, uncached = (
            client_with(auth_cache_seconds=0.5),
            client_with(auth_cache_seconds=0.5),
            client_with(auth_cache_seconds=0),
        )
        admin = auth(make_key(session))
        created = revoking.post(
            "/v1/api-keys", json={"name": "erin", "role": "annotator"}, headers=admin
        ).json()
        key = auth(created["key"])
        assert other.get("/v1/projects", headers=key).status_code == 200  # now trusted there
        assert uncached.get("/v1/projects", headers=key).status_code == 200
        assert revoking.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 204
        assert uncached.get("/v1/projects", headers=key).status_code == 401
        time.sleep(0.6)
        assert other.get("/v1/projects", headers=key).status_code == 401

    def test_key_cannot_revoke_itself(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session, name="root"))
        key_id = session.exec(select(ApiKey.id).where(ApiKey.name == "root")).one()
        assert client.delete(f"/v1/api-keys/{key_id}", headers=admin).status_code == 409


class TestListApiKeys:
    def test_keyset_pages_cover_every_key_once(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        for i in range(5):
            make_key(session, role=Role.annotator, name=f"pager-{i}")
        seen: list[int] = []
        cursor = None
        for _ in range(10):
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/api-keys", params=params, headers=admin).json()
            assert len(page["items"]) <= 2
            seen += [k["id"] for k in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 6
        assert seen == sorted(seen)

    def test_garbage_cursor_is_422(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        assert (
            client.get("/v1/api-keys", params={"cursor": "!!!"}, headers=admin).status_code == 422
        )


class TestBootstrap:
    def test_first_start_creates_one_admin_key_then_never_again(self, session: Session) -> None:
        secret = ensure_bootstrap_admin(session, configured_key=None)
        assert secret is not None and secret.startswith("lw_")
        assert ensure_bootstrap_admin(session, configured_key=None) is None
        rows = session.exec(select(ApiKey)).all()
        assert [(r.name, r.role) for r in rows] == [("admin", "admin")]

    def test_configured_key_is_used_and_not_echoed(self, session: Session) -> None:
        assert ensure_bootstrap_admin(session, configured_key="lw_configured_secret_123") is None
        row = session.exec(select(ApiKey)).one()
        assert row.key_hash == hash_key("lw_configured_secret_123")
