"""OCI images: references, the registry client, the content store, safe layer unpacking, and
the image config turned into a process (see each module's docstring)."""
