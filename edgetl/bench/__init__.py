"""`edgetl bench`, device side (no torch at import): `harness` times a bundle (warm-up, minimum duration and
iterations, percentiles, what actually ran), `gate` the CI regression verdicts (saved JSON or an interleaved A/B), `report` the JSON contract and plots.
The by-hand peers of `bench --peers` need the training stack and live in `edgetl.compare`.
"""
