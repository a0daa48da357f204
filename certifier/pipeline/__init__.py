"""Services: the pipeline's use cases, between the pure domain and the outside world.

Each function takes a SQLAlchemy session (and a clock), reads state, asks the domain what to do,
and writes the result. Services only flush; whoever opened the session commits (the request
dependency, the task wrapper, the CLI). Work to do after a commit goes through a Dispatcher.
"""
