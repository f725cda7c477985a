"""The four predict routes: one table (:mod:`.table`) drives both their FastAPI registration
(OpenAPI) and the ASGI dispatch that serves them ahead of the router (:mod:`.dispatch`)."""
