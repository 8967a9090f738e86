"""Test helpers shipped with theano_lowmem (the referee's pytest plugin)."""
