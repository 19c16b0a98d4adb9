"""The search: the stages (`stages`), the ask-run-tell loop they share (`loop`), refine's
sampler (`samplers`) and the learning-rate ranges per optimizer family (`lr_ranges`)."""
