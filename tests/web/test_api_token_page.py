"""The "Your API token" page without a browser: create (shown once), regenerate, revoke, CSRF."""

import re

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PAGE = "/account/token/"


def shown_key(response) -> str | None:
    found = re.search(r'data-field="token-key">(\w+)<', response.content.decode())
    return found.group(1) if found else None


def works(key: str) -> bool:
    return APIClient().get("/api/tools/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_the_page_needs_a_login_and_is_in_the_nav(client, user):
    response = client.get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    client.force_login(user)
    assert f'href="{PAGE}"' in client.get("/").content.decode()


def test_create_shows_the_key_once_then_only_a_hint(alice_client, user):
    page = alice_client.get(PAGE)
    assert "You have no API token." in page.content.decode() and shown_key(page) is None

    created = alice_client.post(PAGE, {"action": "create"})
    key = shown_key(created)
    assert created.status_code == 200 and key == Token.objects.get(user=user).key
    assert "no-store" in created["Cache-Control"]
    assert works(key)

    again = alice_client.get(PAGE)
    assert shown_key(again) is None and key not in again.content.decode()
    assert f"starting <code>{key[:4]}…</code>" in again.content.decode()


def test_create_with_a_token_already_is_refused_and_keeps_it(alice_client, user):
    key = Token.objects.create(user=user).key
    refused = alice_client.post(PAGE, {"action": "create"})
    assert refused.status_code == 409 and shown_key(refused) is None
    assert "regenerate it" in refused.content.decode()
    assert Token.objects.get(user=user).key == key


def test_regenerate_replaces_the_key_at_once(alice_client, user):
    old = Token.objects.create(user=user).key
    response = alice_client.post(PAGE, {"action": "regenerate"})
    new = shown_key(response)
    assert new and new != old and Token.objects.get(user=user).key == new
    assert works(new) and not works(old)


def test_revoke_deletes_the_token(alice_client, user):
    key = Token.objects.create(user=user).key
    response = alice_client.post(PAGE, {"action": "revoke"}, follow=True)
    assert "Your API token is revoked." in response.content.decode()
    assert "You have no API token." in response.content.decode()
    assert not Token.objects.filter(user=user).exists() and not works(key)


def test_one_user_s_page_never_touches_another_s_token(alice_client, other_user):
    theirs = Token.objects.create(user=other_user).key
    alice_client.post(PAGE, {"action": "regenerate"})
    alice_client.post(PAGE, {"action": "revoke"})
    assert Token.objects.get(user=other_user).key == theirs


def test_an_unknown_action_is_a_400_and_changes_nothing(alice_client, user):
    response = alice_client.post(PAGE, {"action": "steal"})
    assert response.status_code == 400 and not Token.objects.filter(user=user).exists()
    assert alice_client.put(PAGE).status_code == 405


def test_posts_need_the_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    for action in ("create", "regenerate", "revoke"):
        assert client.post(PAGE, {"action": action}).status_code == 403
    assert not Token.objects.filter(user=user).exists()
    page = client.get(PAGE)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    assert client.post(PAGE, {"action": "create", "csrfmiddlewaretoken": csrf}).status_code == 200
    assert Token.objects.filter(user=user).exists()
