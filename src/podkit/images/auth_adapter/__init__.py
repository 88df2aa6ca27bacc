"""The auth-adapter image: a proxy on the pod's localhost that turns the app's plain requests into
OAuth2-authenticated requests to external APIs (the proxy engine plus a credential filter).

This package holds the credential side, each concern apart:

    config.py         the adapter's config (pydantic) and the proxy engine's config made from it
    oauth_config.py   one upstream's `oauth2:` block (pydantic), checked with field names
    secrets.py        secrets from files (re-read when Kubernetes swaps them) or env, never shown
    token_request.py  pure: builds token requests (grants, client authentication), parses answers
    token_cache.py    pure: the token cache state machine (refresh ahead, single flight, backoff)
    token_source.py   the thin asyncio shell the proxy calls: `await source.token()`
    token_metrics.py  token fetches by result, cache hits, refresh lag, for /metrics
    bearer.py         the tokens as the engine's credentials (proxy/credentials.py)
    challenge.py      pure: what a 401's WWW-Authenticate says (is a new token worth a try)
"""
