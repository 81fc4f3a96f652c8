"""Linkerd's tap API on the proxy's control port (``io.linkerd.proxy.tap.Tap/Observe``).

:mod:`.match` compiles a tap's match (sans-io), :mod:`.events` builds its events,
:mod:`.taps` holds the active taps and observes requests through the request-observer seam
(:mod:`gossamer_proxy.observe`) only while some tap is active, and :mod:`.server` serves
``Observe`` over mTLS to the one identity named by ``LINKERD2_PROXY_TAP_SVC_NAME``.
"""
