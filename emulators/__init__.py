"""Local emulators of the cloud KMS and identity services Kodori talks to.

This package is a development and test tool: ``make run`` and the test suite start these servers so that
Kodori's real cloud SDK clients have something to talk to on 127.0.0.1. Production code never imports it.
"""
