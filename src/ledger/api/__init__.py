"""The HTTP API (Litestar): app factory, auth, problem details, one router per resource."""
