"""What the pipeline and the adapters share: the retry policy and the counts. No I/O."""
