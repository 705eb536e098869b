"""Studies of many settings: the plan, its executors, sweeps and explain."""
