"""`edgetl train`, training side (edgetl[train]: torch, timm, scikit-learn).

`run.run_train` picks the flow (FP32, or `int8` with `--quantize`) over one `pipeline.Pipeline`: `edgetl.data`
loads digits or an ImageFolder, `edgetl.models.backbones` builds the frozen backbone, `features` runs it once
per image through `cache` (content-addressed, append-only segment files on disk), `fit` trains the head (`edgetl.models.heads`),
`summary` prints the result. Importing this package imports nothing heavy.
"""
