"""How a study's budget is shared: the plan among stages (`plan`), what a stage may still
spend (`budget`), and whether a trial's resources fit the cluster (`capacity`)."""
