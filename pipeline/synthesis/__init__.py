"""Rain synthesis: the named presets (presets), the recipe engine (rain), materialized test suites
(suites), opt-in extras."""
