"""The HTTP edge: the only package that imports aiohttp.web. App assembly, middlewares,
routes per resource, params, the OpenAPI document, the dashboard, the error table."""
