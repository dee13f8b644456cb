"""`python -m bench`: whole-pipeline throughput and export latency on the embedded stack."""
