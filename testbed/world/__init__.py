"""The emulated world: the simulated VPC, the cluster facade, specs and scenarios, runs, backends."""
