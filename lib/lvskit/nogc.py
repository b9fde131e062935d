"""Pause Python's cyclic garbage collector while a big table is built.

The collector runs after every 700 new container objects and walks the
young ones, and now and then all of them.  Parsing a big config makes tens
of thousands of tuples and dicts, none of them in a reference cycle, so
those walks find nothing.  Mercurial pauses the collector the same way
around its big parses (util.nogc).  Nothing is leaked: the collector is
back on when the call returns, and reference counting frees everything as
before.
"""
import functools
import gc


def nogc(func):
    """Decorator: run func with the collector paused (if it was running)."""
    @functools.wraps(func)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()
    return paused
