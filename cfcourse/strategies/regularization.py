"""L2 to the previous weights, EWC, online EWC and SI; see lesson 04."""
