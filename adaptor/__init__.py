"""The worker-node daemon cloud-api-adaptor."""
