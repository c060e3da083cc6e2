"""Scale to zero: the pure scaling policy, the sampler (Lambda + CLI) and the simulator."""
