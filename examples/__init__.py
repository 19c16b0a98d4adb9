"""Example specs and an example plugin, installed as stagetune.examples so that
`stagetune serve --demo` finds digits.yaml in a wheel as in a checkout."""
