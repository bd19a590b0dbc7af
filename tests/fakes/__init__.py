"""Local fakes of external services (cloud metadata, cloud APIs) for tests; loopback only."""
