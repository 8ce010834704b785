"""Novu's official Python SDK (novu-py, module novu_py, pinned in
requirements.txt) against subscriberd.

The SDK sends an idempotency-key header on every call (a hook adds one when
the caller gives none) and by default retries 408/409/429/5xx with backoff
for up to an hour; the client here turns retries off (RetryConfig "none") so
a server error fails the test at once instead of being retried away.
"""

import json
import re
import time

import pytest
from novu_py import Novu, models
from novu_py.utils import BackoffStrategy, RetryConfig

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def novu(url, key) -> Novu:
    return Novu(
        server_url=url,
        secret_key=key,
        retry_config=RetryConfig("none", BackoffStrategy(0, 0, 1.0, 0), False),
        timeout_ms=10_000,
    )


def absent(result, *fields):
    """The fields were not in the JSON document the server sent."""
    sent = result.model_fields_set
    return all(field not in sent and not getattr(result, field) for field in fields)


def online_flag(novu, subscriber_id, is_online, **kwargs):
    return novu.subscribers.properties.update_online_flag(
        subscriber_id=subscriber_id,
        update_subscriber_online_flag_request_dto={"is_online": is_online},
        **kwargs,
    )


def test_create_online_offline_retrieve(novu, subscriber_id):
    created = novu.subscribers.create(
        create_subscriber_request_dto={
            "subscriber_id": subscriber_id,
            "first_name": "Ada",
            "email": "ada@example.com",
            "data": {"plan": "pro", "seats": 3},
        }
    ).result
    assert created.subscriber_id == subscriber_id
    assert created.first_name == "Ada"
    assert created.email == "ada@example.com"
    assert created.data == {"plan": "pro", "seats": 3}
    assert created.deleted is False
    assert created.channels == []
    assert created.v == 0
    assert OBJECT_ID.match(created.id), created.id
    assert OBJECT_ID.match(created.organization_id)
    assert OBJECT_ID.match(created.environment_id)
    assert ISO_TIME.match(created.created_at) and created.created_at == created.updated_at
    assert absent(created, "is_online", "last_online_at", "last_name", "phone", "timezone")

    online = online_flag(novu, subscriber_id, True).result
    assert online.is_online is True
    assert absent(online, "last_online_at"), "going online leaves lastOnlineAt unset"
    assert online.v == 1
    assert online.id == created.id
    assert online.first_name == "Ada" and online.data == created.data

    offline = online_flag(novu, subscriber_id, False).result
    assert offline.is_online is False
    assert ISO_TIME.match(offline.last_online_at), offline.last_online_at
    assert offline.v == 2
    assert offline.updated_at >= online.updated_at >= created.updated_at
    assert offline.last_online_at == offline.updated_at

    retrieved = novu.subscribers.retrieve(subscriber_id=subscriber_id).result
    assert retrieved.is_online is False
    assert retrieved.last_online_at == offline.last_online_at
    assert retrieved.v == 2
    assert retrieved.model_dump(by_alias=True) == offline.model_dump(by_alias=True)


def test_explicit_nulls_leave_fields_unset_and_an_upsert_clears_them(novu, subscriber_id):
    # A model built with None sends null for those fields:
    # {"subscriberId":..,"firstName":"Ada","lastName":null,"email":null,...}
    created = novu.subscribers.create(
        create_subscriber_request_dto=models.CreateSubscriberRequestDto(
            subscriber_id=subscriber_id,
            first_name="Ada",
            last_name=None,
            email=None,
            phone=None,
            avatar=None,
            locale=None,
            timezone=None,
            data=None,
        )
    ).result
    assert created.first_name == "Ada"
    assert absent(created, "last_name", "email", "phone", "avatar", "locale", "timezone", "data")
    assert created.v == 0

    filled = novu.subscribers.create(
        create_subscriber_request_dto={
            "subscriber_id": subscriber_id,
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "timezone": "Europe/London",
            "data": {"a": 1},
        }
    ).result
    assert (filled.first_name, filled.last_name, filled.email) == ("Ada", "Lovelace", "ada@example.com")
    assert filled.timezone == "Europe/London" and filled.data == {"a": 1}
    assert filled.v == 1

    cleared = novu.subscribers.create(
        create_subscriber_request_dto=models.CreateSubscriberRequestDto(
            subscriber_id=subscriber_id, last_name=None, timezone=None, data=None
        )
    ).result
    assert absent(cleared, "last_name", "timezone", "data"), "null clears the field on an upsert"
    assert cleared.first_name == "Ada" and cleared.email == "ada@example.com"
    assert cleared.v == 2

    retrieved = novu.subscribers.retrieve(subscriber_id=subscriber_id).result
    assert retrieved.model_dump(by_alias=True) == cleared.model_dump(by_alias=True)


def test_a_missing_subscriber_is_a_typed_404(novu, subscriber_id):
    with pytest.raises(models.ErrorDto) as err:
        online_flag(novu, subscriber_id, True)
    assert err.value.status_code == 404
    assert err.value.data.message == "Subscriber not found"
    assert err.value.data.path == f"/v1/subscribers/{subscriber_id}/online-status"

    with pytest.raises(models.ErrorDto) as err:
        novu.subscribers.retrieve(subscriber_id=subscriber_id)
    assert err.value.status_code == 404
    assert err.value.data.message == "Subscriber not found"

    with pytest.raises(models.ErrorDto) as err:
        novu.subscribers.delete(subscriber_id=subscriber_id)
    assert err.value.status_code == 404


def test_delete_then_404(novu, subscriber_id):
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": subscriber_id})
    deleted = novu.subscribers.delete(subscriber_id=subscriber_id).result
    assert deleted.acknowledged is True
    assert deleted.status == "deleted"
    with pytest.raises(models.ErrorDto) as err:
        novu.subscribers.retrieve(subscriber_id=subscriber_id)
    assert err.value.status_code == 404
    with pytest.raises(models.ErrorDto) as err:
        online_flag(novu, subscriber_id, True)
    assert err.value.status_code == 404


def test_retries_are_off_so_a_409_surfaces_at_once(novu, subscriber_id):
    assert novu.sdk_configuration.retry_config.strategy == "none"
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": subscriber_id})
    started = time.monotonic()
    # By default the SDK would retry this 409 with backoff for up to an hour.
    # It expects a subscriber document in a 409 body (its OpenAPI document
    # says so) while Novu and subscriberd send the error shape, so the error
    # is a ResponseValidationError: any NovuError carrying the 409 will do.
    with pytest.raises(models.NovuError) as err:
        novu.subscribers.create(
            create_subscriber_request_dto={"subscriber_id": subscriber_id}, fail_if_exists=True
        )
    assert err.value.status_code == 409, str(err.value)
    assert json.loads(err.value.body)["statusCode"] == 409
    assert time.monotonic() - started < 5


def test_idempotency_keys_replay_and_each_call_gets_its_own(novu, subscriber_id):
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": subscriber_id})
    key = f"key-{subscriber_id}"
    first = online_flag(novu, subscriber_id, True, idempotency_key=key)
    again = online_flag(novu, subscriber_id, True, idempotency_key=key)
    assert first.result.v == again.result.v == 1
    assert again.headers.get("idempotency-replay") == ["true"]
    assert again.headers.get("idempotency-key") == [key]
    # Without a key the SDK makes a fresh one per call: a real second write.
    heartbeat = online_flag(novu, subscriber_id, True)
    assert heartbeat.result.v == 2
    assert "idempotency-replay" not in heartbeat.headers


def test_a_wrong_key_is_a_typed_401(url, subscriber_id):
    stranger = Novu(
        server_url=url,
        secret_key="not-a-real-key",
        retry_config=RetryConfig("none", BackoffStrategy(0, 0, 1.0, 0), False),
    )
    with pytest.raises(models.ErrorDto) as err:
        stranger.subscribers.retrieve(subscriber_id=subscriber_id)
    assert err.value.status_code == 401
    assert err.value.data.message == "API Key not found"


def test_documents_with_a_running_presence_lease_parse(novu, url, key, subscriber_id):
    # tests/sdk_python.rs runs the server with --presence-ttl-secs, so every
    # online document carries onlineExpiresAt (SPEC section 10).
    import httpx

    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": subscriber_id})
    online = online_flag(novu, subscriber_id, True).result
    assert online.is_online is True
    raw = httpx.get(
        f"{url}/v1/subscribers/{subscriber_id}",
        headers={"Authorization": f"ApiKey {key}"},
        timeout=10,
    ).json()["data"]
    assert ISO_TIME.match(raw["onlineExpiresAt"]), raw
    got = novu.subscribers.retrieve(subscriber_id=subscriber_id).result
    assert got.is_online is True and got.subscriber_id == subscriber_id
