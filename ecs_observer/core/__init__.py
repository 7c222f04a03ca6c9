"""The pure core: decoding, translation, chaining, per-message decisions.

No I/O, no clock, no globals (the import contract in pyproject.toml keeps the
AWS and HTTP libraries out): everything comes in as arguments, so each function
is tested exhaustively and gives the same answer for a redelivered message.
"""
