"""Federated data sources: each returns a `FederatedData` with TFF ClientData for train and test."""
