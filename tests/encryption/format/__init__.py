"""Tests of the blob format (``encryption.format``): the envelope, the raw Cobblestone scheme, Wycheproof's
vectors and the golden blobs."""
