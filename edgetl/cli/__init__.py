"""The `edgetl` command (`main`), one module per command group: `train` (train, cache), `export`, `deploy`
(compile, package, predict, doctor, build-engine), `bench`, `demo`. Each command parses its options into one
config and calls one library function; the training stack is imported inside the commands that need it.
"""


class Finished:
    """What a one-shot command returns once it has closed everything it opened and written all its output
    (`predict`): `main` may then end the process without the interpreter's teardown (`main.quick_exit`)."""


FINISHED = Finished()
