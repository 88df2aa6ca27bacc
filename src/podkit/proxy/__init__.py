"""The HTTP/TCP proxy engine shared by the ambassador and auth-adapter images."""
