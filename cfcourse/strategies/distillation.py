"""Learning without Forgetting; see lesson 06."""
