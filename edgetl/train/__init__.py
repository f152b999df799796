"""`edgetl train`, training side (edgetl[train]: torch, timm, scikit-learn).

`run.run_train` picks the flow (FP32, or `int8` with `--quantize`) over one `pipeline.Pipeline`: `data` loads
digits or an ImageFolder, `backbones/` builds the frozen backbone, `features` runs it once per image through
`cache` (content-addressed shards on disk), `fit` trains the head (`heads`), `summary` prints the result.
Importing this package imports nothing heavy: `config` is read by the CLI before torch is loaded.
"""
