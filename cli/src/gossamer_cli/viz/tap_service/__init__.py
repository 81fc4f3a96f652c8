"""The viz extension's tap service (Linkerd's ``tap`` component).

It holds the tap identity (``tap.<viz-ns>.serviceaccount.identity.<cp-ns>.<trust-domain>``,
the only client the proxies' tap servers accept), resolves a resource to its live meshed
pods through the Kubernetes API, and fans ``Tap/Observe`` out to their proxies over mTLS,
merging the streams under a bound on events and on time.

Callers reach it over HTTPS on the path of Linkerd's aggregated API
(``POST /apis/tap.linkerd.io/v1alpha1/watch/namespaces/<ns>/<kind>s/<name>/tap``), either
through the kube-apiserver (the ``v1alpha1.tap.linkerd.io`` APIService ``viz install``
renders: the apiserver's front proxy names the user in ``X-Remote-*`` headers, believed only
from its client certificate, :mod:`.frontproxy`) or directly: the service then authenticates
the caller itself, as an aggregated API server's delegated authentication does (a client
certificate verified against the cluster's client CA from ``kube-system/extension-apiserver-
authentication``, or a bearer token checked with a ``TokenReview``). Every call is
authorized with a ``SubjectAccessReview`` for verb ``watch`` on ``<kind>s/tap`` in API group
``tap.linkerd.io``: exactly the check the apiserver makes for Linkerd's APIService, so
Linkerd's ``tap-admin`` ClusterRole grants the same rights here. It serves the discovery
documents (:mod:`.discovery`) an aggregated server must for the APIService to be Available.

Pure parts: :mod:`.api` (paths, queries, the event stream's lines), :mod:`.authz`
(subjects, the review and its decision), :mod:`.frontproxy` (who a proxied call is),
:mod:`.discovery`, :mod:`.bounds` (the merged stream's budget).
I/O: :mod:`.auth`, :mod:`.server`, :mod:`.certify`, :mod:`.client` (the callers' side).
"""
