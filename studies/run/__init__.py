"""Running a study: the runner that drives its stages (`runner`), its Ray actor
(`runner_actor`), the executors that run trials (`executor`, `ray_executor`), joining the
cluster (`cluster`) and the sentences for Ray's faults (`ray_faults`)."""
