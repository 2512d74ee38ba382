"""The ``cronbeat`` command line (``cli.main``): an entry point, so it may use every
package (``app``, ``api``, ``messaging``, ``tasks``); none of them imports it."""
