"""The head's HTTP API (`orch serve`): FastAPI over actors.api and the journal, behind bearer tokens.

    app.py          the endpoints and their schemas (create_app)
    auth.py         bearer tokens from a file or the environment; the ASGI gate in front of it all
    limits.py       the request body limit (a manifest's 1 MiB)
    submissions.py  validate, confine, store, journal and schedule a manifest, once per experiment
    confine.py      manifest paths kept inside the allowed data roots
    events.py       journal events as server-sent events
    server.py       uvicorn over an embedded or a running Ray (`orch serve`)
    client.py       the CLI's urllib client (`--api URL`): no Ray on a researcher's laptop
"""
