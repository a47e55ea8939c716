"""Federated training: the NVIDIA FLARE job that runs this bundle at several hospitals, and FedAvg's reference rule."""
