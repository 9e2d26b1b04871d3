"""The demo of `deploy/local/run`: realistic devices and traffic through the API, then a check.

It registers devices, runs a live campaign to every user and a burst of direct sends, all
through the REST API with API keys, while the workers deliver to the sandbox. The report
compares the database with the sandbox's accepted counts.
"""
