"""Rain synthesis: the recipe engine (rain), materialized test suites (suites), opt-in extras."""
