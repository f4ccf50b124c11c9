"""The head's HTTP API (`orch serve`): FastAPI over orchestrator.app and the journal, behind bearer tokens.

    app.py          the endpoints and their schemas (create_app)
    auth.py         bearer tokens from a file or the environment; the ASGI gate in front of it all
    limits.py       the request body limit (a manifest's 1 MiB) and deadline; event streams per token
    protocol.py     uvicorn's h11 with a deadline on request headers
    headers.py      security headers (CSP, nosniff, frame and referrer policy) on every answer
    errors.py       Detail: the body of every error answer
    submissions.py  validate, confine, store, journal and schedule a manifest, once per experiment
    confine.py      manifest paths kept inside the allowed data roots
    events.py       journal events as server-sent events
    server.py       uvicorn over an embedded or a running Ray (`orch serve`); run_http's limits
    client.py       the CLI's urllib client (`--api URL`), its HTTP Backend: no Ray on a researcher's laptop
"""
