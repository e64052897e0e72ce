"""enilab's emulated world: the simulated VPC, the cluster facade, backends, CLI and pytest plugin."""
