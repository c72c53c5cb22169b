"""Kodori's blob format: the Cobblestone-256 chunked scheme (``cobblestone``, ``cobblestone_read``), Kodori's
framing around it (``envelope``, the API the app calls), the stream helpers they share (``streamio``) and the
errors they raise (``errors``).

Pure bytes in, bytes out: nothing in this package imports Django, the models or the key hierarchy, so it can
be read, tested and benchmarked on its own. The byte layout is specified in docs/blob-format.md.
"""
