"""The `edgetl` command (`main`), one module per command group: `train` (train, cache), `export`, `deploy`
(compile, package, predict, doctor, build-engine), `bench`, `demo`. Each command parses its options into one
config and calls one library function; the training stack is imported inside the commands that need it.
"""

import gc


class Finished:
    """What a one-shot command returns once it has closed everything it opened and written all its output
    (`predict`): `main` may then end the process without the interpreter's teardown (`main.quick_exit`)."""


FINISHED = Finished()


def started() -> None:
    """A one-shot command's start-up is over (its modules imported, its model loaded): turn the cyclic garbage
    collector back on where `main` turned it off for the start-up (edgetl.cli.main.process_start), with every object
    made so far frozen out of its scans. Where it is on (tests calling main([...]), scripts) nothing changes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
