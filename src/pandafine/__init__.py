"""pandafine: regenerate PANDA-FINE yearly nighttime-light rasters of China.

The package holds every stage of the workflow as importable functions; the
``pandafine`` command line exposes one subcommand per stage and the Snakefile
only wires files to those subcommands.
"""

__version__ = "0.1.0"
