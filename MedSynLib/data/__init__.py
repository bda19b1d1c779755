"""Training data: manifests of CT + masks + report, preprocessing into model space, caches."""
