"""simple-webapp: the demo web server of podkit's examples (see settings.py for its options)."""
