"""Development tools: the private servers and process runner behind `make run` and `make test`."""
