"""Upstream tracking: sources (GitLab, GitHub, Gerrit, plain git), webhooks and polling.

``sources`` reads branch heads and history from a forge or a git URL behind one interface;
``webhooks`` checks signatures and turns payloads into ref updates; ``deliveries`` stores each
webhook delivery before it is acknowledged and processes it in a worker; ``polling`` catches the
pushes whose webhook never came; ``events`` applies what either of them saw to the database (new
commits, force-pushes, deleted branches). docs/tracking.md has the operator's side.
"""
