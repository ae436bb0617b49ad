"""The local model zoo: catalog of known models, fetch, publish, load with digest checks."""
