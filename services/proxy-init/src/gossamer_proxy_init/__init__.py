"""gossamer_proxy_init: the init container that makes a pod's TCP connections use the proxy.

It installs, in the pod's network namespace, the same ``nat``-table chains and rules as
Linkerd's proxy-init (``PROXY_INIT_REDIRECT`` from ``PREROUTING``, ``PROXY_INIT_OUTPUT`` from
``OUTPUT``), for IPv4 and optionally IPv6, with ``iptables-legacy``, ``iptables-nft`` or plain
``iptables``. Run it as ``python -m gossamer_proxy_init [flags]``.

Flags (Linkerd's names; list flags are comma-separated and repeatable; booleans accept
``--flag``, ``--flag=true`` and ``--flag=false``):

==============================  =====================================================  =======
flag                            meaning                                                default
==============================  =====================================================  =======
``-p/--incoming-proxy-port``    inbound proxy port (required unless ``--cleanup``)       -
``-o/--outgoing-proxy-port``    outbound proxy port (required unless ``--cleanup``)      -
``-u/--proxy-uid``              proxy uid; its traffic is not redirected                -1
``-g/--proxy-gid``              proxy gid; its traffic is not redirected                -1
``-r/--ports-to-redirect``      inbound ports to redirect                               all
``--inbound-ports-to-ignore``   ports or ranges ``a-b`` not redirected inbound           none
``--outbound-ports-to-ignore``  ports or ranges ``a-b`` not redirected outbound          none
``--subnets-to-ignore``         source CIDRs not redirected inbound                     none
``--ipv6``                      also configure ip6tables                                true
``--iptables-mode``             ``legacy``, ``nft`` or ``plain``                        legacy
``--firewall-bin-path``         deprecated; ``iptables-legacy|iptables-nft|iptables``    -
``--firewall-save-bin-path``    deprecated; the matching ``*-save``                     -
``--simulate``                  print the iptables-restore payload, change nothing      false
``--cleanup``                   (Gossamer) remove proxy-init's jumps and chains         false
``--netns``                     path of the network namespace to configure              current
``-w/--use-wait-flag``          pass ``-w`` to iptables-restore                         false
``--timeout-close-wait-secs``   set ``nf_conntrack_tcp_timeout_close_wait``             0 (keep)
``--log-format``                ``plain`` or ``json``                                   plain
``--log-level``                 ``panic fatal error warn info debug trace``             info
==============================  =====================================================  =======

Exit status: 0 done, 1 a firewall tool failed, 2 invalid flags (nothing changed).
"""
