"""The server-rendered dashboard: plain HTML from Jinja2 templates, no JavaScript.

No external assets either: the page must load on a phone on a lab network with no internet.
"""
