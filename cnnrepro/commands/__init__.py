"""The ``cnnrepro`` commands: one module per verb, the only argument parsing in the package.

Each module has ``main(verb, args) -> int`` and returns the exit status; a ``cnnrepro.errors.UserError``
raised anywhere below reaches ``cnnrepro.cli``, which prints it as one line. A new verb is a new
module here plus one line in ``cnnrepro.cli.VERBS``; a new flag of a verb goes into its module.
"""
