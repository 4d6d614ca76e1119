"""billwatch: the shared package of the billwatch Lambda functions."""
