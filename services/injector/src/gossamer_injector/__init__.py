"""gossamer_injector: the mutating admission webhook that adds the proxy to pods.

``review`` is the sans-io AdmissionReview logic, ``lookups`` the apiserver reads it needs,
``server`` the aiohttp HTTPS shell, ``tls_reload`` the rotating serving certificate and
``__main__`` the wiring. The patch itself comes from :mod:`gossamer_inject`, shared with
``gossamer inject``.
"""
