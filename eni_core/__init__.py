"""enilab's VPC-CNI logic: what would run on a real node, with no knowledge of the testbed."""
