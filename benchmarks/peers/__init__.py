"""Peer servers that the predict benchmarks measure side by side with ours (issue 11)."""
