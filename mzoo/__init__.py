"""The ``mzoo`` application: the command line on top of every package (:mod:`mzoo.cli`).

It lives in a package of its own, above ``search``, so that no domain package imports the command line: each
package owns its verbs (``zoo.cli``, ``export.cli``, ``latency_tables.cli``, ``search.cli``) and this root only
assembles them and turns the project's errors into one-line messages.
"""
