"""Files and views derived from the lab model: inventories, TripleO environments, ssh config."""
