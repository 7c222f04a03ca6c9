"""The pipeline: receive, decide, forward, acknowledge; written against the ports alone."""
