"""Novu's legacy Python SDK (novu 1.14.0, module novu, pinned in
requirements.txt) against subscriberd.

SubscriberApi(url, api_key) takes the server's base URL (no /v1) and appends
/v1/subscribers. It sends every field of SubscriberDto, null when the caller
left it unset ({"subscriberId": .., "email": .., "firstName": ..,
"lastName": null, "phone": null, "avatar": null, "locale": null,
"channels": null, "data": null}), sends no idempotency key, never retries,
and raises requests.HTTPError on any non-2xx answer.
"""

import re

import pytest
import requests
from novu.api import SubscriberApi
from novu.dto.subscriber import SubscriberDto

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class ShowingApi(SubscriberApi):
    """The SDK's client, with the server's answer in the message of its errors."""

    def handle_request(self, *args, **kwargs):
        try:
            return super().handle_request(*args, **kwargs)
        except requests.HTTPError as err:
            raise requests.HTTPError(f"{err}: {err.response.text}", response=err.response) from None


@pytest.fixture
def api(url, key) -> SubscriberApi:
    return ShowingApi(url, key, requests_timeout=10)


def test_create_online_offline_get(api, subscriber_id):
    created = api.create(
        SubscriberDto(
            subscriber_id=subscriber_id,
            email="ada@example.com",
            first_name="Ada",
            data={"plan": "pro", "seats": 3},
        )
    )
    assert created.subscriber_id == subscriber_id
    assert created.email == "ada@example.com"
    assert created.first_name == "Ada"
    assert created.last_name is None and created.phone is None and created.locale is None
    assert created.data == {"plan": "pro", "seats": 3}
    assert created.channels == []
    assert created.deleted is False
    assert created.is_online is None and created.last_online_at is None
    assert OBJECT_ID.match(created._id), created._id
    assert OBJECT_ID.match(created._organization_id)
    assert OBJECT_ID.match(created._environment_id)
    assert ISO_TIME.match(created.created_at)

    online = api.online_status(subscriber_id, True)
    assert online.subscriber_id == subscriber_id
    assert online.is_online is True
    assert online.last_online_at is None, "going online leaves lastOnlineAt unset"
    assert online._id == created._id

    offline = api.online_status(subscriber_id, False)
    assert offline.is_online is False
    assert ISO_TIME.match(offline.last_online_at), offline.last_online_at
    assert offline.updated_at >= online.updated_at >= created.updated_at

    assert api.get(subscriber_id) == offline


def test_create_with_only_an_id(api, subscriber_id):
    # Every other field goes out as null, data included.
    created = api.create(SubscriberDto(subscriber_id=subscriber_id))
    assert created.subscriber_id == subscriber_id
    assert (created.email, created.first_name, created.last_name, created.data) == (None,) * 4
    assert created.channels == []
    assert api.get(subscriber_id) == created


def test_a_second_create_clears_the_fields_left_unset(api, subscriber_id):
    api.create(
        SubscriberDto(subscriber_id=subscriber_id, email="ada@example.com", first_name="Ada", data={})
    )
    # The SDK sends "email": null here: an upsert clears what is null.
    updated = api.create(SubscriberDto(subscriber_id=subscriber_id, first_name="Grace"))
    assert updated.first_name == "Grace"
    assert updated.email is None
    assert updated.data is None
    assert api.get(subscriber_id) == updated


def test_a_missing_subscriber_is_an_http_404(api, subscriber_id):
    for call in (
        lambda: api.online_status(subscriber_id, True),
        lambda: api.get(subscriber_id),
        lambda: api.delete(subscriber_id),
    ):
        with pytest.raises(requests.HTTPError) as err:
            call()
        assert err.value.response.status_code == 404
        assert err.value.response.json()["message"] == "Subscriber not found"


def test_delete_then_404(api, subscriber_id):
    api.create(SubscriberDto(subscriber_id=subscriber_id, first_name="Ada"))
    assert api.delete(subscriber_id) is None
    with pytest.raises(requests.HTTPError) as err:
        api.get(subscriber_id)
    assert err.value.response.status_code == 404


def test_get_parses_the_channels_the_server_returns(api, url, key, subscriber_id):
    # The SDK cannot send channels itself (it does not camelCase nested DTOs:
    # it sends "provider_id"), so they are set with a plain request; the SDK
    # needs providerId and _integrationId on every channel to parse it.
    res = requests.post(
        f"{url}/v1/subscribers",
        headers={"Authorization": f"ApiKey {key}"},
        json={
            "subscriberId": subscriber_id,
            "channels": [{"providerId": "slack", "credentials": {"webhookUrl": "https://hooks.example/1"}}],
        },
        timeout=10,
    )
    assert res.status_code == 201, res.text
    got = api.get(subscriber_id)
    assert len(got.channels) == 1
    channel = got.channels[0]
    assert channel.provider_id == "slack"
    assert OBJECT_ID.match(channel._integration_id)
    assert channel.credentials.webhook_url == "https://hooks.example/1"


def test_documents_with_a_running_presence_lease_parse(api, url, key, subscriber_id):
    # tests/sdk_python.rs runs the server with --presence-ttl-secs, so every
    # online document carries onlineExpiresAt (SPEC section 10).
    api.create(SubscriberDto(subscriber_id=subscriber_id))
    online = api.online_status(subscriber_id, True)
    assert online.is_online is True
    raw = requests.get(
        f"{url}/v1/subscribers/{subscriber_id}",
        headers={"Authorization": f"ApiKey {key}"},
        timeout=10,
    ).json()["data"]
    assert ISO_TIME.match(raw["onlineExpiresAt"]), raw
    got = api.get(subscriber_id)
    assert got.is_online is True and got.subscriber_id == subscriber_id
