"""Cluster and cloud targets: the isolated cdktn environment, synth, terraform init/plan/apply."""
