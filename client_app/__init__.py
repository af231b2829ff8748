"""The client server role: the public REST API, routing each request to the tablet servers."""
