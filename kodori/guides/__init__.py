"""The customer guides, served as pages at ``/guides/``: rendered from the Markdown files in ``docs/``.

``catalogue`` names the guides Kodori serves (an allow-list: nothing else under ``docs/`` is reachable),
``render`` turns one into safe HTML with Python-Markdown (raw HTML escaped, links between guides pointed at
their pages, links to other repository files made plain text, an anchor on every heading), cached per process
by the file's modification time, ``views`` are the two pages and ``checks`` fails ``manage.py check`` when
``KODORI_GUIDES_DIR`` lacks a guide (the wheel leaves ``docs/`` out).
"""
