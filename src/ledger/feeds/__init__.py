"""Following cursor-paged sources live: the change feeds (SSE) and their wakeups."""
