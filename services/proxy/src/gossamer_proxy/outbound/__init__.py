"""The outbound data path's discovery side: targets, backends, balancing and endpoint plans.

:mod:`.discovery` turns an original destination into a :class:`~.discovery.TargetHandle`
(ServiceProfile + one balanced :class:`~.backend.Backend` per authority); :mod:`.plan`
turns a picked endpoint into how to connect and how to label the traffic. The protocol
servers (HTTP/1, HTTP/2, opaque) only ever see :class:`~.plan.Pick` objects.
"""
