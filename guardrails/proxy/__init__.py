"""The sidecar HTTP proxy: an OpenAI-compatible server with the guard in front of any
OpenAI-compatible upstream or an in-process generator.

Importing this package imports FastAPI and aiohttp; ``import guardrails`` never does.
"""

from guardrails.proxy.app import create_app, create_app_from_env
from guardrails.proxy.config import ProxyConfig, ProxyConfigError

__all__ = ["ProxyConfig", "ProxyConfigError", "create_app", "create_app_from_env"]
