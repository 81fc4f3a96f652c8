"""Generated protobuf and gRPC modules for the Linkerd proxy API.

Do not edit: regenerate with ``python libs/api/generate.py`` (``make protos``).
"""
