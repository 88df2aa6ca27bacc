"""oauth-demo: a stand-in for an external OAuth2-protected API and its identity provider, so the
auth-adapter example runs on one machine. Not for deployment: see __main__.py."""
