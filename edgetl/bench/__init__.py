"""`edgetl bench`, device side (no torch at import): `harness` times a bundle (warm-up, minimum duration and
iterations, percentiles, what actually ran), `peers` the same model through pipelines written by hand,
`gate` the CI regression verdicts (saved JSON or an interleaved A/B), `report` the JSON contract and plots.
"""
