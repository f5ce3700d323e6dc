"""The web side: the app, API routes, tokens and auth, formats, SCS, the dashboard and live feed."""
