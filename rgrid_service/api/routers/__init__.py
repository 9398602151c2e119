"""The /v1 routes, one module per resource; each handler turns a request into a service call."""
