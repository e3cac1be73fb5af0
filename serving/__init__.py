"""sharelens serving: the HTTP API, the web page and the `sharelens-serve` CLI.

Imports `sharelens` (labels, normalisation, bundle, registry, predictor, explanations) and never
`training`, so a serving image needs no training code or data.
"""
