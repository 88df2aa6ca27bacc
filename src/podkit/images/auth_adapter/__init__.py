"""The auth-adapter image: a proxy on the pod's localhost that turns the app's plain requests into
OAuth2-authenticated requests to external APIs (the proxy engine plus a credential filter).

This package holds the credential side, each concern apart:

    oauth_config.py   one upstream's `oauth2:` block (pydantic), checked with field names
    secrets.py        secrets from files (re-read when Kubernetes swaps them) or env, never shown
    token_request.py  pure: builds token requests (grants, client authentication), parses answers
    token_cache.py    pure: the token cache state machine (refresh ahead, single flight, backoff)
    token_source.py   the thin asyncio shell the proxy calls: `await source.token()`
    token_metrics.py  token fetches by result, cache hits, refresh lag, for /metrics
"""
