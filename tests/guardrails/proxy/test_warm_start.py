"""The proxy loads its policy's classifier before it reports ready: no request pays for it."""

from __future__ import annotations

import httpx

from guardrails.proxy.config import ProxyConfig


def test_classifier_is_loaded_before_ready(tmp_path, upstream, proxy_starter):
    """With the shipped default (rules and classifier), /readyz says ready only once the
    default guard's classifier is loaded and has run."""
    config = ProxyConfig(
        policy=None,
        upstream=upstream.url,
        upstream_key="upstream-secret",
        audit=None,
        keys_file=None,
        allow_anonymous=True,
        models=("fake-model",),
    )
    server = proxy_starter(config, tmp_path / "unused.yaml")
    try:
        assert httpx.get(f"{server.root}/readyz", timeout=30).status_code == 200
        registry = server.server.config.app.state.proxy.registry
        guard = registry.slots[None].guard
        assert guard.pipeline.classifier is not None
    finally:
        server.stop()
