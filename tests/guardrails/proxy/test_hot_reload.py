"""Policy hot reload: a valid edit is swapped in, an invalid edit (an alias bomb included) is
rejected and the last good policy stays; both are audited; the watcher never dies or hangs.
Runs its own proxy (module-scoped fixtures); each proxy test starts from the original policy."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from structlog.testing import capture_logs

import audit
from guardrails.proxy.keys import add_key, revoke_key
from guardrails.proxy.metrics import Metrics
from guardrails.proxy.policies import PolicyRegistry, ReloadWatcher

NEW_RULE = """\
  - id: fruit.pineapple
    category: fruit
    keywords: ["pineapple"]
    action: block
    applies_to: [input]
"""

#: A "billion laughs" alias bomb: a few hundred bytes that expand to 9**9 strings.
ALIAS_BOMB = "".join(
    [
        "name: proxy-test\n",
        'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n"
            for i in range(1, 9)
        ),
    ]
)  # fmt: skip

DEADLINE_S = 30.0  # generous: the watcher polls every 0.2 s, the machine may be busy


def _wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _digest(proxy, keys):
    policies = httpx.get(
        f"{proxy.root}/admin/policy", headers={"Authorization": f"Bearer {keys.admin_all}"}
    ).json()["policies"]
    return next(p["digest"] for p in policies if p["name"] == "proxy-test")


def _reload_events(proxy, keys, action):
    events = httpx.get(
        f"{proxy.root}/admin/audit",
        params={"action": action, "limit": 1000},
        headers={"Authorization": f"Bearer {keys.admin_all}"},
    ).json()["events"]
    return [e for e in events if e["metadata"].get("event") == "policy_reload"]


def _serve(proxy, keys, text: str) -> str:
    """Write ``text`` as the policy and wait until the proxy serves it; its digest."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    proxy.policy_path.write_text(text, encoding="utf-8")
    _wait_for(lambda: _digest(proxy, keys) == digest, "the edit was never applied")
    return digest


@pytest.fixture
def original_policy(proxy, keys, policy_text) -> Iterator[str]:
    """Every test starts, and leaves the proxy, on the original policy (any order works)."""
    digest = _serve(proxy, keys, policy_text)
    yield digest
    _serve(proxy, keys, policy_text)


@pytest.fixture
def client(proxy, keys):
    """An official client with tenant A's key (the reloaded default policy)."""
    with openai.OpenAI(base_url=proxy.url, api_key=keys.tenant_a, max_retries=0) as c:
        yield c


def _ask(client, text):
    return client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}]
    )


def _chat_status(proxy, key: str) -> int:
    return httpx.post(
        f"{proxy.url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fake-model", "messages": [{"role": "user", "content": "say: hi"}]},
        timeout=10,
    ).status_code


def test_valid_edit_is_applied_and_audited(proxy, keys, client, policy_text, original_policy):
    """An added rule takes effect without a restart; the swap is an audit event."""
    assert _ask(client, "say: pineapple").parse().choices[0].message.content == "pineapple"
    _serve(proxy, keys, policy_text + NEW_RULE)
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, "say: pineapple")
    assert caught.value.body["rules"] == ["fruit.pineapple"]
    applied = _reload_events(proxy, keys, "allow")
    assert any(e["metadata"]["previous_digest"] == original_policy for e in applied)


def test_invalid_edit_is_rejected_last_good_stays(
    proxy, keys, client, policy_text, original_policy
):
    """A broken edit is rejected with file:line errors; the last good policy keeps serving."""
    good = _serve(proxy, keys, policy_text + NEW_RULE)
    broken = policy_text + NEW_RULE + "  - id: bad\n    pattern: '(unclosed'\n    action: block\n"
    proxy.policy_path.write_text(broken, encoding="utf-8")
    outcome = httpx.post(
        f"{proxy.root}/admin/policy/reload", headers={"Authorization": f"Bearer {keys.admin_all}"}
    ).json()["reloads"]
    mine = next(o for o in outcome if o["digest"] == good)
    assert mine["outcome"] in {"rejected", "unchanged"}  # the watcher may have got there first
    assert _digest(proxy, keys) == good
    # Still enforcing the last good policy, which blocks pineapple.
    with pytest.raises(openai.BadRequestError):
        _ask(client, "say: pineapple")
    assert _ask(client, "say: fine").parse().choices[0].message.content == "fine"

    def rejected_bad():
        return [e for e in _reload_events(proxy, keys, "block") if "'bad'" in (e["error"] or "")]

    _wait_for(rejected_bad, "the rejection was never audited")
    assert "policy.yaml:" in rejected_bad()[0]["error"]


def test_alias_bomb_is_refused_and_keys_stay_revocable(proxy, keys, client, original_policy):
    """A hot-reloaded alias bomb is rejected at file:line, the last good policy serves on,
    and the watcher keeps applying key additions and revocations afterwards."""
    assert len(ALIAS_BOMB.encode()) < 600
    proxy.policy_path.write_text(ALIAS_BOMB, encoding="utf-8")

    def rejected_bomb():
        return [
            e for e in _reload_events(proxy, keys, "block") if "alias bomb" in (e["error"] or "")
        ]

    _wait_for(rejected_bomb, "the watcher never rejected the alias bomb")
    assert "policy.yaml:6:" in rejected_bomb()[0]["error"]  # the alias that crosses the bound
    assert _digest(proxy, keys) == original_policy
    assert _ask(client, "say: still here").parse().choices[0].message.content == "still here"
    key, record = add_key(keys.file, tenant="tenant-after-bomb")
    _wait_for(lambda: _chat_status(proxy, key) == 200, "a key added after the bomb never worked")
    revoke_key(keys.file, record.key_id)
    _wait_for(lambda: _chat_status(proxy, key) == 401, "a key revoked after the bomb still works")


def test_audit_chain_verifies_after_reloads(proxy, keys, client, policy_text, original_policy):
    """Every event written by the proxy (calls and reloads) verifies, on one chain: reloads
    and other policies share the worker's audit writer (Guard.with_policy)."""
    _ask(client, "say: one more")
    _serve(proxy, keys, policy_text + NEW_RULE)
    _ask(client, "say: and another")
    report = audit.verify_chain(proxy.audit_url)
    assert report.ok, report.first_problem
    assert report.events_checked >= 3
    assert report.chains_checked == 1


# --- the watcher itself, fed failures (no server) --------------------------------------------


class _FlakyRing:
    """A key ring whose re-reads fail with PermissionError ``failures`` times, then work."""

    def __init__(self, failures: int) -> None:
        self.path = Path("keys.json")
        self.keys: tuple[object, ...] = ()
        self.failures = failures
        self.calls = 0
        self.reloaded = threading.Event()

    def reload_if_changed(self) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise PermissionError(13, "Permission denied", "keys.json")
        self.reloaded.set()
        return True


class _Registry:
    """Stands in for `PolicyRegistry`: every check fails, or hangs when ``hang``."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.calls = 0

    async def check_all(self) -> list[object]:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        raise PermissionError(13, "Permission denied", "policy.yaml")


async def _until(condition: Callable[[], bool], task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            assert not task.done(), task
            await asyncio.sleep(0.01)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_watcher_survives_permission_errors():
    """PermissionError from the keys file and from the policy check is logged, the watcher
    keeps polling, and the keys reload once the file is readable again."""

    async def scenario() -> list[dict[str, object]]:
        ring, registry = _FlakyRing(failures=3), _Registry()
        watcher = ReloadWatcher(registry, lambda: ring, interval_s=0.01)  # type: ignore[arg-type]
        with capture_logs() as logs:
            task = asyncio.create_task(watcher.run())
            await _until(lambda: ring.reloaded.is_set() and registry.calls >= 4, task)
            await _stop(task)
        return logs

    logs = asyncio.run(scenario())
    events = [entry["event"] for entry in logs]
    assert events.count("keys_watch_failed") == 3
    assert "PermissionError" in str(next(e for e in logs if e["event"] == "keys_watch_failed"))
    assert events.count("policy_watch_failed") >= 4
    assert "keys_reloaded" in events


def test_watcher_keys_go_on_while_a_policy_check_hangs():
    """A policy check that never returns does not stop key reloads."""

    async def scenario() -> None:
        ring, registry = _FlakyRing(failures=0), _Registry(hang=True)
        watcher = ReloadWatcher(registry, lambda: ring, interval_s=0.01)  # type: ignore[arg-type]
        task = asyncio.create_task(watcher.run())
        await _until(lambda: registry.calls == 1 and ring.calls >= 5, task)
        await _stop(task)

    asyncio.run(scenario())


def test_watcher_abandons_a_hung_keys_read():
    """A keys read stuck in its thread is abandoned after load_timeout_s and not started
    again while it runs; once it returns, reloads resume."""
    release = threading.Event()

    class StuckRing(_FlakyRing):
        def reload_if_changed(self) -> bool:
            self.calls += 1
            if self.calls == 1:
                release.wait(DEADLINE_S)
            return super().reload_if_changed()

    async def scenario() -> list[dict[str, object]]:
        ring = StuckRing(failures=0)
        watcher = ReloadWatcher(
            _Registry(),  # type: ignore[arg-type]
            lambda: ring,
            interval_s=0.01,
            load_timeout_s=0.05,
        )
        with capture_logs() as logs:
            task = asyncio.create_task(watcher.run())
            await _until(lambda: any(e["event"] == "keys_reload_still_running" for e in logs), task)
            assert ring.calls == 1
            release.set()
            await _until(lambda: ring.calls >= 3, task)
            await _stop(task)
        return logs

    events = [entry["event"] for entry in asyncio.run(scenario())]
    assert "keys_reload_timed_out" in events


def test_registry_rejects_a_load_that_never_finishes(tmp_path, monkeypatch, policy_text):
    """A policy load stuck past load_timeout_s is rejected, the last good policy stays, and
    the registry's lock is free for the next reload."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text, encoding="utf-8")
    release = threading.Event()
    import guardrails.proxy.policies as policies

    real_load = policies.load_policy

    def stuck_load(spec: str) -> object:
        release.wait(DEADLINE_S)
        return real_load(spec)

    async def scenario() -> None:
        registry = PolicyRegistry(str(path), None, Metrics(), load_timeout_s=0.05)
        slot = await registry.get(str(path))
        good = slot.guard.policy.digest
        path.write_text(policy_text + "# touched\n", encoding="utf-8")
        monkeypatch.setattr(policies, "load_policy", stuck_load)
        outcome = await registry.check(str(path))
        assert outcome is not None
        assert outcome.outcome == "rejected"
        assert "did not load within" in outcome.errors[0]
        assert registry.default().guard.policy.digest == good
        release.set()
        monkeypatch.setattr(policies, "load_policy", real_load)
        path.write_text(policy_text + "# touched twice\n", encoding="utf-8")
        applied = await registry.check(str(path))
        assert applied is not None
        assert applied.outcome == "applied"
        await registry.close()

    asyncio.run(scenario())
